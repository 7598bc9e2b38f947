//! `wasmatic runs NAME [--limit N] [--follow]`: a component's run history,
//! and new runs as they are recorded.

use std::time::Duration;

use serde_json::Value;

use super::args::RunsArgs;
use super::table::{self, Table};
use super::transport::Node;
use super::{emit, emit_line, encode, ClientError};

/// How often `--follow` asks for new runs.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Runs asked for per page while catching up.
const PAGE: u32 = 100;
/// Pages read per poll at most: a component recording more than this many
/// runs a second is shown with gaps rather than falling ever further behind.
const MAX_PAGES: usize = 10;
/// Column widths of `--follow`'s table, whose rows come a batch at a time
/// and must line up under the header printed once.
const FOLLOW_WIDTHS: [usize; 5] = [6, 20, 7, 6, 14];

pub async fn runs(node: &Node, json: bool, args: &RunsArgs) -> Result<(), ClientError> {
    let path = format!("/handlers/{}/runs", encode(&args.name));
    let reply = node.get(&format!("{path}?limit={}", args.limit)).await?;
    if json && !args.follow {
        emit_line(&String::from_utf8_lossy(&reply.body));
        return Ok(());
    }
    let mut latest = runs_of(&reply.json()?);
    // The node lists the newest first; people read a history top down.
    latest.reverse();
    if !args.follow {
        if latest.is_empty() {
            emit(&format!("no runs of {} yet\n", args.name));
        } else {
            emit(&runs_table(&latest, None).render());
        }
        return Ok(());
    }
    let mut seen = latest.iter().filter_map(run_id).max().unwrap_or(0);
    if !json && !emit(&runs_table(&[], Some(FOLLOW_WIDTHS)).render()) {
        return Ok(());
    }
    let mut batch = latest;
    loop {
        if !batch.is_empty() {
            let text = if json {
                batch
                    .iter()
                    .map(|run| format!("{run}\n"))
                    .collect::<String>()
            } else {
                runs_table(&batch, Some(FOLLOW_WIDTHS)).render_body()
            };
            // Whoever reads has gone (`| head`): nothing more to do.
            if !emit(&text) {
                return Ok(());
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
        batch = newer_than(node, &path, seen).await?;
        if let Some(newest) = batch.iter().filter_map(run_id).max() {
            seen = newest;
        }
    }
}

/// The runs recorded after run `seen`, oldest first, reading back page by
/// page (at most [`MAX_PAGES`]) until it reaches `seen`.
async fn newer_than(node: &Node, path: &str, seen: u64) -> Result<Vec<Value>, ClientError> {
    let mut found = Vec::new();
    let mut before: Option<u64> = None;
    for _ in 0..MAX_PAGES {
        let query = match before {
            Some(id) => format!("{path}?limit={PAGE}&before={id}"),
            None => format!("{path}?limit={PAGE}"),
        };
        let reply = node.get(&query).await?;
        let page = runs_of(&reply.json()?);
        let oldest = page.iter().filter_map(run_id).min();
        let reached_seen = page.iter().any(|r| run_id(r).is_some_and(|id| id <= seen));
        found.extend(
            page.into_iter()
                .filter(|r| run_id(r).is_some_and(|id| id > seen)),
        );
        // The node sends `Link: …; rel="next"` when older runs follow.
        let more = reply.headers.contains_key(http::header::LINK);
        match oldest {
            Some(oldest) if more && !reached_seen => before = Some(oldest),
            _ => break,
        }
    }
    found.sort_by_key(|r| run_id(r).unwrap_or(0));
    Ok(found)
}

fn runs_of(list: &Value) -> Vec<Value> {
    list.as_array().cloned().unwrap_or_default()
}

fn run_id(run: &Value) -> Option<u64> {
    run["id"].as_u64()
}

/// What started a run: a call of an export, a schedule or trigger, or a
/// request to `/run`.
fn cause(run: &Value) -> String {
    if let Some(function) = run["function"].as_str() {
        format!("call {function}")
    } else if run["job_id"].is_string() {
        "schedule".into()
    } else {
        "run".into()
    }
}

fn runs_table(runs: &[Value], widths: Option<[usize; 5]>) -> Table {
    let mut table = Table::new(&["ID", "STARTED", "TOOK", "OK", "CAUSE", "OUTPUT"]);
    if let Some(widths) = widths {
        table.min_widths(&widths);
    }
    for run in runs {
        let output = match run.get("error") {
            Some(error) if !error.is_null() => error,
            _ => &run["output"],
        };
        table.row(vec![
            table::text(&run["id"]),
            table::time(&run["started_at"]),
            table::millis(&run["duration_ms"]),
            table::outcome(&run["ok"]),
            cause(run),
            table::text(output),
        ]);
    }
    table
}
