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
        Some(b64) => Some(
            decode_base64(b64)
                .map_err(|e| Response::error(400, &format!("wasmB64 is not base64: {e}")))?,
        ),
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

/// Standard base64, padding optional, whitespace ignored.
fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use base64::Engine as _;
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    LENIENT.decode(compact).map_err(|e| e.to_string())
}
