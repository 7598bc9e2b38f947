//! The default operator of a wasmatic node: the node's HTTP API.
//!
//! It is a `wasi:http/proxy` component; the host runs a fresh instance of it
//! per request, so it keeps no state of its own. Handler files live in its
//! preopened `registered` directory; everything else (compiling, running,
//! scheduling, chain triggers, run history) it asks of the host through
//! the `wasmatic:operator` interfaces.

mod handlers;
mod http;
mod jobs;
mod modules;
mod routes;
mod schedules;
mod triggers;
mod ui;
mod workflows;

wit_bindgen::generate!({
    path: "../wit/operator",
    world: "wasmatic:operator/operator",
    generate_all,
    // The host's records go out as JSON with their WIT field names; a run's
    // absent options are left out rather than written as null.
    additional_type_attributes: {
        "wasmatic:operator/handlers@0.4.3/handler-info": [#[derive(serde::Serialize)]],
        "wasmatic:operator/handlers@0.4.3/export-info": [#[derive(serde::Serialize)]],
        "wasmatic:operator/handlers@0.4.3/inspection": [#[derive(serde::Serialize)]],
        "wasmatic:operator/handlers@0.4.3/file-kind": [#[derive(serde::Serialize)] #[serde(rename_all = "lowercase")]],
        "wasmatic:operator/handlers@0.4.3/component-kind": [#[derive(serde::Serialize)] #[serde(rename_all = "lowercase")]],
        "wasmatic:operator/schedules@0.4.3/schedule": [#[derive(serde::Serialize)]],
        "wasmatic:operator/runs@0.4.3/run": [#[derive(serde::Serialize)]],
        "wasmatic:operator/runs@0.4.3/rpc-call": [#[derive(serde::Serialize)]],
        "wasmatic:operator/modules@0.4.3/module-info": [#[derive(serde::Serialize)]],
        "wasmatic:operator/types@0.4.3/audit-entry": [#[derive(serde::Serialize)]],
        "wasmatic:operator/types@0.4.3/audit-level": [#[derive(serde::Serialize)] #[serde(rename_all = "lowercase")]],
    },
    additional_member_attributes: {
        "wasmatic:operator/runs@0.4.3/run.function": [#[serde(skip_serializing_if = "Option::is_none")]],
        "wasmatic:operator/runs@0.4.3/run.job-id": [#[serde(skip_serializing_if = "Option::is_none")]],
        "wasmatic:operator/runs@0.4.3/run.scheduled-for": [#[serde(skip_serializing_if = "Option::is_none")]],
        "wasmatic:operator/runs@0.4.3/run.output": [#[serde(skip_serializing_if = "Option::is_none")]],
        "wasmatic:operator/runs@0.4.3/run.error": [#[serde(skip_serializing_if = "Option::is_none")]],
    },
});

struct Operator;

impl exports::wasi::http::incoming_handler::Guest for Operator {
    fn handle(
        request: wasi::http::types::IncomingRequest,
        response_out: wasi::http::types::ResponseOutparam,
    ) {
        let request = http::Request::read(request);
        let response = routes::route(&request).with_request_id(&request);
        response.send(response_out);
    }
}

export!(Operator);
