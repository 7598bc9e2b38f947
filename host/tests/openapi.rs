//! The API document (`GET /openapi.json`) against the routes the default
//! operator serves: the router's own table (operator/src/routes/table.rs,
//! which it matches every request against) must list exactly the documented
//! operations, and every documented operation, asked of a real node, must be
//! answered by its route with a status the document lists. `make test`
//! checks the document itself with openapi-spec-validator (`make openapi`).

mod support;

#[path = "../../operator/src/routes/table.rs"]
#[allow(dead_code)]
mod table;

use std::collections::BTreeSet;

use serde_json::Value;
use support::up;

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

/// Every documented operation, as (METHOD, path), with its definition.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            assert!(
                METHODS.contains(&method.as_str()),
                "{path}: `{method}` is not an operation"
            );
            found.push((method.to_uppercase(), path.clone(), operation.clone()));
        }
    }
    found
}

fn served() -> BTreeSet<(String, String)> {
    table::ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect()
}

#[test]
fn the_document_lists_exactly_the_routes_the_operator_serves() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &[]);
    let answer = node.get("/openapi.json");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let committed = include_str!("../../operator/openapi.json");
    assert_eq!(
        answer.text(),
        committed,
        "the node serves another document than operator/openapi.json: run `make operator`"
    );
    let doc = answer.json();
    assert_eq!(doc["openapi"], "3.1.0");

    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect();
    let served = served();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "served but not in openapi.json: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "in openapi.json but not served: {unserved:?}"
    );

    // The token: documented on exactly the routes that check it.
    for (method, path, operation) in operations(&doc) {
        let route = table::ROUTES
            .iter()
            .find(|r| r.method == method && r.path == path)
            .expect("served");
        let guarded = operation["security"]
            .as_array()
            .is_some_and(|s| s.iter().any(|r| r.get("nodeToken").is_some()));
        assert_eq!(
            guarded, route.token,
            "{method} {path}: the document and the router disagree on the token"
        );
        if route.token {
            assert!(
                operation["responses"]["401"].is_object(),
                "{method} {path} needs the token but documents no 401"
            );
        }
    }
}

/// A request for `path` with its `{…}` filled in.
fn concrete(path: &str) -> String {
    path.replace("{name}", "nobody")
        .replace("{id}", "0")
        .replace("{function}", "run")
        .replace("{file}", "app.js")
}

#[test]
fn every_documented_operation_is_answered_by_its_route() {
    let dir = tempfile::tempdir().unwrap();
    let node = up(dir.path(), &[]);
    let doc = node.get("/openapi.json").json();
    for (method, path, operation) in operations(&doc) {
        // A browser's `GET /` goes to the console; the document says so.
        let headers: &[(&str, &str)] = if path == "/" {
            &[("accept", "text/html")]
        } else {
            &[]
        };
        let target = concrete(&path);
        let answer = node.request(&method, &target, headers, b"");
        let what = format!("{method} {target}: {} {}", answer.status, answer.text());
        assert_ne!(answer.status, 405, "{what}");
        assert!(
            !(answer.status == 404 && answer.text().contains("no route")),
            "{what}"
        );
        assert!(
            !answer.text().contains("has no handler in this operator"),
            "{what}"
        );
        let status = answer.status.to_string();
        assert!(
            operation["responses"].get(&status).is_some(),
            "{what}: status {status} is not documented"
        );
        // Errors are JSON naming the request, as the document says.
        if answer.status >= 400 {
            let body = answer.json();
            assert!(body["error"].is_string(), "{what}");
            assert_eq!(
                body["request_id"].as_str(),
                answer.header("x-request-id"),
                "{what}"
            );
        }
        assert_eq!(answer.header("wasmatic-route"), None, "{what}");
    }
}
