//! `wasmatic:operator/jobs`: WASI command jobs.

use super::bindings::wasmatic::operator::jobs as wit;
use super::bindings::wasmatic::operator::types::Error;
use super::OperatorState;

/// Bytes of stdout and of stderr a job may write unless it says (the node
/// clamps what it says to its own maximum).
const DEFAULT_OUTPUT: u32 = 1 << 20;

impl wit::Host for OperatorState {
    async fn run(&mut self, job: wit::JobRequest) -> Result<wit::JobResult, Error> {
        self.run_job(job, None).await
    }

    async fn run_on_chain(
        &mut self,
        job: wit::JobRequest,
        chain_id: u64,
    ) -> Result<wit::JobResult, Error> {
        self.run_job(job, Some(chain_id)).await
    }
}

impl OperatorState {
    async fn run_job(
        &mut self,
        job: wit::JobRequest,
        chain_id: Option<u64>,
    ) -> Result<wit::JobResult, Error> {
        let request = wasmatic_guests::jobs::JobRequest {
            job_id: job.job_id,
            wasm: job.wasm,
            wasm_hash: job.wasm_hash,
            timeout: std::time::Duration::from_millis(u64::from(job.timeout_ms.max(1))),
            input: job.input,
            max_stdout: job.max_stdout_bytes.unwrap_or(DEFAULT_OUTPUT) as usize,
            max_stderr: job.max_stderr_bytes.unwrap_or(DEFAULT_OUTPUT) as usize,
            chain_id,
        };
        let result = self.node()?.components().run_job(request).await?;
        Ok(wit::JobResult {
            job_id: result.job_id,
            ok: result.ok,
            result: result.result,
            error: result.error,
            stderr: result.stderr,
            duration_ms: result.duration_ms,
        })
    }
}
