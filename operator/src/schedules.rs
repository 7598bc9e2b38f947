//! Cron schedules: `POST /sched`, `GET /sched`, `DELETE /sched/ID`, and
//! the runs of a schedule.

use serde::Deserialize;

use crate::http::{Request, Response};
use crate::routes::{body, handler_name, host_error, remove_by_id, runs_by_id};
use crate::wasmatic::operator::runs;
use crate::wasmatic::operator::schedules as host;

#[derive(Deserialize)]
struct ScheduleRequest {
    name: String,
    cron: String,
    #[serde(default)]
    input: Option<serde_json::Value>,
}

/// `POST /sched {"name", "cron", "input"?}`. A non-string `input` is passed
/// on as its JSON text.
pub fn add(req: &Request) -> Result<Response, Response> {
    let request: ScheduleRequest = serde_json::from_slice(body(req)?).map_err(|e| {
        Response::error(
            400,
            &format!("expected {{\"name\", \"cron\", \"input\"?}}: {e}"),
        )
    })?;
    let name = handler_name(&request.name)?;
    let input = match request.input {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s,
        Some(other) => other.to_string(),
    };
    let job = host::add(&name, &request.cron, &input).map_err(host_error)?;
    Ok(Response::json(201, &job))
}

pub fn list() -> Response {
    Response::json(200, &host::list())
}

pub fn remove(raw: &str) -> Result<Response, Response> {
    remove_by_id(raw, host::remove)
}

pub fn runs(req: &Request, raw: &str) -> Result<Response, Response> {
    runs_by_id(req, raw, runs::of_schedule)
}
