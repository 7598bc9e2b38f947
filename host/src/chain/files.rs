//! Chain RPC for jobs written for the WASM system's file protocol,
//! unchanged: the job writes a JSON-RPC request to a file of its work
//! directory and polls for the answer in another.
//!
//! Each job of a node with chains gets a fresh directory of its own,
//! preopened as `.`, and three environment variables:
//! `WASM_RPC_WORK_DIR` (`.`), `WASM_RPC_REQUEST_FILE`
//! (`wasm_rpc_request.json`) and `WASM_RPC_RESPONSE_FILE`
//! (`wasm_rpc_response.json`). While the job runs, the node looks for the
//! request file every [`POLL`]; once it holds a whole JSON object it is
//! removed and answered: the response is written beside it and renamed into
//! place, so the job never reads half an answer. A request is
//! `{"method", "params"?, "id"?, "chainId"?}` (a JSON-RPC 2.0 request, the
//! chain defaulting to the job's); the answer is a JSON-RPC 2.0 response
//! whose `error` codes follow JSON-RPC (`-32601` for a refused method,
//! `-32602` for bad params, the chain node's own code for its errors).
//! The directory is removed when the job ends; a job that keeps more than
//! 16 MiB or 1000 files in it is stopped.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{RpcError, RunRpc};

pub const WORK_DIR_ENV: &str = "WASM_RPC_WORK_DIR";
pub const REQUEST_FILE_ENV: &str = "WASM_RPC_REQUEST_FILE";
pub const RESPONSE_FILE_ENV: &str = "WASM_RPC_RESPONSE_FILE";
pub const REQUEST_FILE: &str = "wasm_rpc_request.json";
pub const RESPONSE_FILE: &str = "wasm_rpc_response.json";

/// How often the node looks for a request: short enough that a job polling
/// with short sleeps gets its answer within milliseconds.
const POLL: Duration = Duration::from_millis(2);
/// How long a request file may stay unparsable (a job still writing it)
/// before it is answered as malformed.
const PARTIAL_GRACE: Duration = Duration::from_millis(200);
/// Largest request read.
const MAX_REQUEST: u64 = 1 << 20;
/// What a job may keep in its work directory: it is on the node's disk.
const MAX_WORK_BYTES: u64 = 16 << 20;
const MAX_WORK_ENTRIES: usize = 1000;
/// How often the work directory's size is checked.
const SIZE_CHECK: Duration = Duration::from_millis(20);

/// A job's work directory, removed (with whatever the job left in it) when
/// dropped, and the task answering its requests, stopped then too.
pub struct WorkDir {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl WorkDir {
    /// Creates a fresh directory and starts answering the requests written
    /// to it, on `chain` unless a request names another.
    pub fn start(rpc: RunRpc, chain: u64) -> std::io::Result<WorkDir> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "wasmatic-job-{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ));
        std::fs::create_dir(&path)?;
        let task = tokio::spawn(serve(path.clone(), rpc, chain));
        Ok(WorkDir { path, task })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Resolves, saying why, once the job keeps more in its directory than
    /// it may; the caller stops the job.
    pub async fn overflowed(&self) -> String {
        loop {
            tokio::time::sleep(SIZE_CHECK).await;
            let path = self.path.clone();
            if let Ok(Some(why)) = tokio::task::spawn_blocking(move || overfull(&path)).await {
                return why;
            }
        }
    }

    /// The variables the job gets.
    pub fn env() -> [(&'static str, String); 3] {
        [
            (WORK_DIR_ENV, ".".to_string()),
            (REQUEST_FILE_ENV, REQUEST_FILE.to_string()),
            (RESPONSE_FILE_ENV, RESPONSE_FILE.to_string()),
        ]
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        self.task.abort();
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!("cannot remove a job's work directory: {e}");
        }
    }
}

/// Why `dir` holds more than a job may keep, if it does.
fn overfull(dir: &Path) -> Option<String> {
    let mut bytes = 0u64;
    let mut entries = 0usize;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).ok()?.flatten() {
            entries += 1;
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                pending.push(entry.path());
            }
            bytes += meta.len();
        }
        if entries > MAX_WORK_ENTRIES || bytes > MAX_WORK_BYTES {
            return Some(format!(
                "the job kept more than {} MiB or {MAX_WORK_ENTRIES} files in its work directory",
                MAX_WORK_BYTES >> 20
            ));
        }
    }
    None
}

/// Answers the requests written to `dir` until aborted.
async fn serve(dir: PathBuf, rpc: RunRpc, chain: u64) {
    let request = dir.join(REQUEST_FILE);
    let mut unparsable_since: Option<Instant> = None;
    loop {
        tokio::time::sleep(POLL).await;
        let Some(text) = read_request(&request).await else {
            unparsable_since = None;
            continue;
        };
        let answer = match serde_json::from_slice::<Value>(&text) {
            Ok(value) if value.is_object() => answer(&rpc, chain, &value).await,
            _ => {
                let since = *unparsable_since.get_or_insert_with(Instant::now);
                if since.elapsed() < PARTIAL_GRACE {
                    continue;
                }
                error_response(&Value::Null, -32700, "the request is not a JSON object")
            }
        };
        unparsable_since = None;
        let _ = tokio::fs::remove_file(&request).await;
        if let Err(e) = respond(&dir, &answer).await {
            tracing::warn!("cannot answer a job's RPC request: {e}");
        }
    }
}

/// The request file's bytes, if it is there; at most [`MAX_REQUEST`].
async fn read_request(path: &Path) -> Option<Vec<u8>> {
    let meta = tokio::fs::metadata(path).await.ok()?;
    if meta.len() > MAX_REQUEST {
        return Some(b"too large".to_vec());
    }
    tokio::fs::read(path).await.ok()
}

async fn answer(rpc: &RunRpc, default_chain: u64, request: &Value) -> Value {
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let Some(method) = request.get("method").and_then(Value::as_str) else {
        return error_response(&id, -32600, "the request has no \"method\"");
    };
    let chain = match request.get("chainId") {
        None | Some(Value::Null) => default_chain,
        Some(v) => match v.as_u64() {
            Some(chain) => chain,
            None => return error_response(&id, -32602, "\"chainId\" must be a number"),
        },
    };
    let params = request.get("params").cloned().unwrap_or(json!([]));
    match rpc.call(chain, method, &params.to_string()).await {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(RpcError::Node(e)) => {
            let mut response = error_response(&id, e.code, &e.message);
            if let Some(data) = e.data.and_then(|d| serde_json::from_str::<Value>(&d).ok()) {
                response["error"]["data"] = data;
            }
            response
        }
        Err(e) => {
            let code = match e {
                RpcError::MethodNotAllowed(_) => -32601,
                RpcError::InvalidParams(_) | RpcError::UnknownChain(_) => -32602,
                _ => -32000,
            };
            error_response(&id, code, &e.to_string())
        }
    }
}

fn error_response(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// Writes the answer beside the request and renames it into place.
async fn respond(dir: &Path, answer: &Value) -> std::io::Result<()> {
    let partial = dir.join(format!(".{RESPONSE_FILE}.partial"));
    tokio::fs::write(&partial, answer.to_string()).await?;
    tokio::fs::rename(&partial, dir.join(RESPONSE_FILE)).await
}
