//! `wasmatic:operator/runs`: run history, in pages.

use super::bindings::wasmatic::operator::runs as wit;
use super::bindings::wasmatic::operator::types::{AuditEntry, AuditLevel, Error};
use super::OperatorState;
use wasmatic_state::{RunPage, RunRecord};

impl wit::Host for OperatorState {
    async fn of_handler(
        &mut self,
        name: String,
        request: wit::PageRequest,
    ) -> Result<wit::Page, Error> {
        let page = self
            .node()?
            .components()
            .handler_runs(&name, request.limit, request.before)
            .await?;
        Ok(page.into())
    }

    async fn of_schedule(
        &mut self,
        id: String,
        request: wit::PageRequest,
    ) -> Result<wit::Page, Error> {
        let page = self
            .node()?
            .schedules()
            .schedule_runs(&id, request.limit, request.before)
            .await?;
        Ok(page.into())
    }
}

impl From<RunPage> for wit::Page {
    fn from(page: RunPage) -> Self {
        wit::Page {
            runs: page.runs.into_iter().map(Into::into).collect(),
            next: page.next,
        }
    }
}

impl From<RunRecord> for wit::Run {
    fn from(r: RunRecord) -> Self {
        wit::Run {
            id: r.id,
            name: r.name,
            function: r.function,
            job_id: r.job_id,
            scheduled_for: r.scheduled_for,
            started_at: r.started_at,
            duration_ms: r.duration_ms,
            ok: r.ok,
            output: r.output,
            error: r.error,
            stdout: r.stdout,
            stderr: r.stderr,
            audit: r
                .audit
                .into_iter()
                .map(|a| AuditEntry {
                    level: match a.level.as_str() {
                        "debug" => AuditLevel::Debug,
                        "warn" => AuditLevel::Warn,
                        "error" => AuditLevel::Error,
                        _ => AuditLevel::Info,
                    },
                    message: a.message,
                })
                .collect(),
            rpc: r
                .rpc
                .into_iter()
                .map(|c| wit::RpcCall {
                    chain: c.chain,
                    method: c.method,
                    duration_us: c.duration_us,
                    ok: c.ok,
                })
                .collect(),
        }
    }
}
