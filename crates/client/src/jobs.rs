//! WASI command jobs (`wasmatic job`) and JSON workflows
//! (`wasmatic workflow apply | run | runs`): what the node runs as a whole
//! and answers with `ok`, so that a run that failed exits non-zero too.

use base64::Engine as _;
use serde_json::{json, Value};

use super::args::{JobArgs, WorkflowAction};
use super::table::{self, Table};
use super::transport::Node;
use super::{emit, emit_line, encode, json_or_string, read_file, ClientError};

const JSON: &str = "application/json";

/// `POST /wasm/run` with the file as `wasmB64`.
pub async fn job(node: &Node, json: bool, args: &JobArgs) -> Result<(), ClientError> {
    let wasm = read_file(&args.file)?;
    let input = match &args.input {
        None => Value::Null,
        Some(text) => serde_json::from_str(text)
            .map_err(|e| ClientError::Usage(format!("--input is not JSON: {e}")))?,
    };
    let id = match &args.id {
        Some(id) => id.clone(),
        None => args
            .file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "job".into()),
    };
    let body = json!({
        "jobId": id,
        "wasmB64": base64::engine::general_purpose::STANDARD.encode(&wasm),
        "timeoutMs": args.timeout,
        "input": input,
    });
    let reply = node.post("/wasm/run", JSON, body.to_string()).await?;
    let answer = reply.json()?;
    if json {
        emit_line(&String::from_utf8_lossy(&reply.body));
    } else {
        // The job's stderr is its log: where a command's log goes.
        if let Some(stderr) = answer["stderr"].as_str().filter(|s| !s.is_empty()) {
            eprint!("{stderr}");
        }
        if answer["ok"] == true {
            emit_line(&table::block(&answer["result"]));
        }
    }
    if answer["ok"] == true {
        Ok(())
    } else {
        Err(ClientError::Failed(format!(
            "job {} failed: {}",
            table::text(&answer["jobId"]),
            table::text(&answer["error"])
        )))
    }
}

pub async fn workflow(node: &Node, json: bool, action: WorkflowAction) -> Result<(), ClientError> {
    match action {
        WorkflowAction::Apply { file } => {
            let definition = read_file(&file)?;
            // Checked here so that a typo is named with its file; the node
            // checks the rest.
            serde_json::from_slice::<Value>(&definition)
                .map_err(|e| ClientError::Usage(format!("{} is not JSON: {e}", file.display())))?;
            let reply = node.post("/workflows", JSON, definition).await?;
            if json {
                emit_line(&String::from_utf8_lossy(&reply.body));
            } else {
                let stored = reply.json()?;
                let steps = stored["steps"].as_array().map_or(0, Vec::len);
                emit(&format!(
                    "applied workflow {} ({steps} step{})\n",
                    table::text(&stored["name"]),
                    if steps == 1 { "" } else { "s" }
                ));
            }
            Ok(())
        }
        WorkflowAction::Run { name, trigger } => {
            let trigger = trigger.as_deref().map_or(Value::Null, json_or_string);
            let reply = node
                .post(
                    &format!("/workflows/{}/run", encode(&name)),
                    JSON,
                    trigger.to_string(),
                )
                .await?;
            let run = reply.json()?;
            if json {
                emit_line(&String::from_utf8_lossy(&reply.body));
            } else {
                emit(&steps_table(&run["steps"]).render());
                if run["ok"] == true {
                    emit_line(&format!("result: {}", table::block(&run["result"])));
                }
            }
            if run["ok"] == true {
                Ok(())
            } else {
                Err(ClientError::Failed(format!(
                    "workflow {name} run {} failed: {}",
                    table::text(&run["run_id"]),
                    table::text(&run["error"])
                )))
            }
        }
        WorkflowAction::Runs { name, limit } => {
            let reply = node
                .get(&format!("/workflows/{}/runs?limit={limit}", encode(&name)))
                .await?;
            if json {
                emit_line(&String::from_utf8_lossy(&reply.body));
                return Ok(());
            }
            let mut runs = reply.json()?.as_array().cloned().unwrap_or_default();
            runs.reverse();
            if runs.is_empty() {
                emit(&format!("no runs of workflow {name} yet\n"));
                return Ok(());
            }
            let mut table = Table::new(&["RUN", "STARTED", "TOOK", "OK", "CAUSE", "RESULT"]);
            for run in &runs {
                let (ok, result) = if run["running"] == true {
                    ("running".to_string(), String::new())
                } else if run["ok"] == true {
                    ("ok".to_string(), table::text(&run["result"]))
                } else {
                    (table::outcome(&run["ok"]), table::text(&run["error"]))
                };
                table.row(vec![
                    table::text(&run["run_id"]),
                    table::time(&run["started_at"]),
                    table::millis(&run["duration_ms"]),
                    ok,
                    table::text(&run["cause"]),
                    result,
                ]);
            }
            emit(&table.render());
            Ok(())
        }
    }
}

/// A workflow run's steps: each one's outcome and output (or error).
fn steps_table(steps: &Value) -> Table {
    let mut table = Table::new(&["STEP", "OK", "TOOK", "OUTPUT"]);
    for step in steps.as_array().into_iter().flatten() {
        let (ok, output) = if step["not_run"] == true {
            ("not run".to_string(), String::new())
        } else if step["skipped"] == true {
            ("skipped".to_string(), String::new())
        } else if step["ok"] == true {
            ("ok".to_string(), table::text(&step["output"]))
        } else {
            (table::outcome(&step["ok"]), table::text(&step["error"]))
        };
        table.row(vec![
            table::text(&step["id"]),
            ok,
            table::millis(&step["duration_ms"]),
            output,
        ]);
    }
    table
}
