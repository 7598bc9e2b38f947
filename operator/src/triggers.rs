//! Chain triggers: `POST /triggers`, `GET /triggers`, `DELETE /triggers/ID`
//! and the runs of a trigger.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::{Request, Response};
use crate::routes::{body, handler_name, host_error, remove_by_id, runs_by_id};
use crate::wasmatic::operator::triggers as host;

const SHAPE: &str = "expected {\"name\", \"chain_id\", \"on\": \"block\" | {\"logs\": {\"address\", \"topics\"?}}, \"confirmations\"?, \"input\"?}";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerRequest {
    name: String,
    chain_id: u64,
    on: On,
    #[serde(default)]
    confirmations: u32,
    #[serde(default)]
    input: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum On {
    Block,
    Logs(Filter),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Filter {
    address: String,
    #[serde(default)]
    topics: Vec<Option<String>>,
}

/// `POST /triggers`: 201 with the trigger.
pub fn add(req: &Request) -> Result<Response, Response> {
    let request: TriggerRequest = serde_json::from_slice(body(req)?)
        .map_err(|e| Response::error(400, &format!("{SHAPE}: {e}")))?;
    let name = handler_name(&request.name)?;
    let on = match request.on {
        On::Block => host::Event::Block,
        On::Logs(f) => host::Event::Logs(host::LogFilter {
            address: f.address,
            topics: f.topics,
        }),
    };
    let trigger = host::add(&host::TriggerRequest {
        name,
        chain_id: request.chain_id,
        on,
        confirmations: request.confirmations,
        input: request
            .input
            .filter(|v| !v.is_null())
            .map(|v| v.to_string()),
    })
    .map_err(host_error)?;
    Ok(Response::json(201, &to_json(trigger)))
}

pub fn list() -> Response {
    let all: Vec<Value> = host::list().into_iter().map(to_json).collect();
    Response::json(200, &all)
}

pub fn remove(raw: &str) -> Result<Response, Response> {
    remove_by_id(raw, host::remove)
}

pub fn runs(req: &Request, raw: &str) -> Result<Response, Response> {
    runs_by_id(req, raw, host::runs)
}

/// A trigger as JSON, in the shape `POST /triggers` takes.
fn to_json(t: host::Trigger) -> Value {
    let on = match t.on {
        host::Event::Block => json!("block"),
        host::Event::Logs(f) => json!({"logs": {"address": f.address, "topics": f.topics}}),
    };
    let input = t
        .input
        .and_then(|i| serde_json::from_str::<Value>(&i).ok())
        .unwrap_or(Value::Null);
    json!({
        "id": t.id,
        "name": t.name,
        "chain_id": t.chain_id,
        "on": on,
        "confirmations": t.confirmations,
        "input": input,
        "created_at": t.created_at,
        "next_block": t.next_block,
    })
}
