//! WASI command jobs: `POST /wasm/run` of the "WASM system" job API.

use serde::Deserialize;

use crate::http::{Request, Response};
use crate::routes::{host_error, json_body};
use crate::wasmatic::operator::jobs::{self as host, JobRequest};

/// `POST /wasm/run` of the "WASM system" job API.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobBody {
    job_id: String,
    wasm_b64: Option<String>,
    wasm_hash: Option<String>,
    timeout_ms: u32,
    #[serde(default)]
    input: serde_json::Value,
    max_stdout_bytes: Option<u32>,
    max_stderr_bytes: Option<u32>,
    /// The chain the job's RPC calls go to unless they name one.
    chain_id: Option<u64>,
}

pub fn run(req: &Request) -> Result<Response, Response> {
    let job: JobBody = json_body(
        req,
        r#"{"jobId", "wasmB64" or "wasmHash", "timeoutMs", "input", "maxStdoutBytes"?, "maxStderrBytes"?, "chainId"?}"#,
    )?;
    let wasm = match &job.wasm_b64 {
        Some(b64) => {
            Some(decode_base64(b64).ok_or_else(|| Response::error(400, "wasmB64 is not base64"))?)
        }
        None => None,
    };
    let request = JobRequest {
        job_id: job.job_id,
        wasm,
        wasm_hash: job.wasm_hash,
        timeout_ms: job.timeout_ms,
        input: job.input.to_string(),
        max_stdout_bytes: job.max_stdout_bytes,
        max_stderr_bytes: job.max_stderr_bytes,
    };
    let result = match job.chain_id {
        Some(chain_id) => host::run_on_chain(&request, chain_id),
        None => host::run(&request),
    }
    .map_err(host_error)?;
    let mut answer = serde_json::json!({
        "jobId": result.job_id,
        "ok": result.ok,
        "stderr": result.stderr,
        "durationMs": result.duration_ms,
    });
    if let Some(result) = result.result {
        answer["result"] =
            serde_json::from_str(&result).unwrap_or(serde_json::Value::String(result));
    }
    if let Some(error) = result.error {
        answer["error"] = serde_json::Value::String(error);
    }
    Ok(Response::json(200, &answer))
}

/// Standard base64 (padding optional, whitespace ignored).
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let digits: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .map(value)
        .collect::<Option<_>>()?;
    if digits.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, d)| n | (u32::from(*d) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    Some(out)
}
