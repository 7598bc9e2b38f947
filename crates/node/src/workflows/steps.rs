//! One step of a workflow run: its condition, its inputs rendered from the
//! run's scope, its retries and its time limit, and the call it makes —
//! a handler, an export, a WASI job, an HTTP request or a chain read — each
//! through the same path (and limits, and records) as the single call.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{json, Value};

use super::Workflows;
use wasmatic_guests::jobs::{JobRequest, MAX_JOB_TIMEOUT};
use wasmatic_net::{Client, ConnectError, Dial, SendError, CONNECT_TIMEOUT};
use wasmatic_workflows::{self as workflows, Scope, Step, StepKind, Workflow, MAX_STEP_TIMEOUT_MS};

/// A step's time limit when it sets none.
const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `render` (a template's rendering) off the async worker: over a
/// trigger of megabytes it may take long enough to hold up every other task
/// of the worker, `/health` among them.
fn rendered<T>(render: impl FnOnce() -> T) -> T {
    wasmatic_workers::block_in_place(render)
}

/// Bytes of an HTTP step's response body kept, and of a job's output.
const MAX_STEP_OUTPUT: usize = 1 << 20;

impl Workflows {
    /// Runs `step`: `Ok(None)` when its condition skipped it, its output,
    /// or why it failed (after its retries).
    pub(crate) async fn step(
        &self,
        workflow: &Workflow,
        step: &Step,
        scope: &Scope,
        deadline: Instant,
    ) -> Result<Option<Value>, String> {
        if let Some(when) = &step.when {
            if !rendered(|| workflows::condition(when, scope))? {
                return Ok(None);
            }
        }
        let limit = step
            .timeout_ms
            .map(|ms| Duration::from_millis(ms.min(MAX_STEP_TIMEOUT_MS)))
            .unwrap_or(DEFAULT_STEP_TIMEOUT);
        let mut last_error = String::new();
        for attempt in 0..=step.retries {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("the run is past its time limit".into());
            }
            let timeout = limit.min(left);
            let call = self.step_call(workflow, step, scope, timeout);
            match tokio::time::timeout(timeout, call).await {
                Ok(Ok(output)) => return Ok(Some(output)),
                Ok(Err(e)) => last_error = e,
                Err(_) => last_error = format!("timed out after {}ms", timeout.as_millis()),
            }
            if attempt < step.retries {
                // The error may be a guest's own words: one escaped line.
                tracing::info!(
                    step = step.id,
                    attempt,
                    "workflow step failed, retrying: {}",
                    wasmatic_guests::audit_log::log_safe(&last_error)
                );
            }
        }
        Err(if step.retries > 0 {
            format!("{last_error} (after {} attempts)", step.retries + 1)
        } else {
            last_error
        })
    }

    /// The step's one call.
    async fn step_call(
        &self,
        workflow: &Workflow,
        step: &Step,
        scope: &Scope,
        timeout: Duration,
    ) -> Result<Value, String> {
        match &step.kind {
            StepKind::Run { handler, input } => {
                let input = match rendered(|| workflows::render(input, scope))? {
                    Value::String(text) => text,
                    other => other.to_string(),
                };
                let output = self
                    .components
                    .invoke(handler, &input)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(json_or_text(output))
            }
            StepKind::Call {
                component,
                function,
                args,
            } => {
                let args = Value::Array(
                    args.iter()
                        .map(|a| rendered(|| workflows::render(a, scope)))
                        .collect::<Result<_, _>>()?,
                )
                .to_string();
                let answer = if self.core.registry.get(component).is_some() {
                    self.components
                        .call_component(component, function, &args)
                        .await
                } else {
                    self.components
                        .call_module(component, function, &args)
                        .await
                };
                Ok(json_or_text(answer.map_err(|e| e.to_string())?))
            }
            StepKind::Job { wasm_hash, input } => {
                let (ok, result, error) = self
                    .step_job(workflow, step, scope, wasm_hash, input, timeout)
                    .await?;
                if ok {
                    Ok(result)
                } else {
                    Err(error)
                }
            }
            StepKind::WasmValidation { wasm_hash, input } => {
                let (ok, result, error) = self
                    .step_job(workflow, step, scope, wasm_hash, input, timeout)
                    .await?;
                if !ok {
                    return Err(format!("the validation job failed: {error}"));
                }
                let valid =
                    result == Value::Bool(true) || result.get("valid") == Some(&Value::Bool(true));
                if valid {
                    Ok(result)
                } else {
                    let reason = result
                        .get("reason")
                        .or_else(|| result.get("error"))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("the job answered {result}"));
                    Err(format!("not valid: {reason}"))
                }
            }
            StepKind::Http {
                method,
                url,
                headers,
                body,
            } => {
                let secrets = self.step_secrets(&step.kind).await?;
                let request = async {
                    let secrets = secrets.as_ref();
                    let url = rendered(|| workflows::render_text_with(url, scope, secrets))?;
                    let headers = headers
                        .iter()
                        .map(|(k, v)| {
                            let value =
                                rendered(|| workflows::render_text_with(v, scope, secrets))?;
                            Ok((k.clone(), value))
                        })
                        .collect::<Result<Vec<_>, String>>()?;
                    let body = body
                        .as_ref()
                        .map(|b| rendered(|| workflows::render_with(b, scope, secrets)))
                        .transpose()?;
                    self.step_http(method, &url, &headers, body).await
                };
                match (request.await, &secrets) {
                    (answer, None) => answer,
                    // What the request carried stays out of the run record,
                    // the log and the client's answer.
                    (Ok(output), Some(secrets)) => {
                        Ok(crate::workflows::secrets::scrub_value(output, secrets))
                    }
                    (Err(e), Some(secrets)) => Err(crate::workflows::secrets::scrub(&e, secrets)),
                }
            }
            StepKind::Eth {
                chain_id,
                method,
                params,
            } => {
                let params = Value::Array(
                    params
                        .iter()
                        .map(|p| rendered(|| workflows::render(p, scope)))
                        .collect::<Result<_, _>>()?,
                );
                self.core
                    .chains
                    .forward(*chain_id, method, &params.to_string())
                    .await
                    .map_err(|e| format!("chain {chain_id}: {e}"))
            }
        }
    }

    /// Runs a job by hash with the rendered `input`: whether it answered
    /// `ok`, its result, its error.
    async fn step_job(
        &self,
        workflow: &Workflow,
        step: &Step,
        scope: &Scope,
        wasm_hash: &str,
        input: &Value,
        timeout: Duration,
    ) -> Result<(bool, Value, String), String> {
        let input = rendered(|| workflows::render(input, scope))?;
        let request = JobRequest {
            job_id: format!("{}-{}-{}", workflow.name, scope.run_id, step.id),
            wasm: None,
            wasm_hash: Some(wasm_hash.to_string()),
            timeout: timeout.min(MAX_JOB_TIMEOUT),
            input: input.to_string(),
            max_stdout: MAX_STEP_OUTPUT,
            max_stderr: MAX_STEP_OUTPUT,
            chain_id: None,
        };
        let result = self
            .components
            .run_job(request)
            .await
            .map_err(|e| e.to_string())?;
        let output = result.result.map(json_or_text).unwrap_or(Value::Null);
        Ok((
            result.ok,
            output,
            result.error.unwrap_or_else(|| "the job failed".into()),
        ))
    }

    /// One HTTP request under the node's outbound policy; a status of 400
    /// or more fails the step.
    async fn step_http(
        &self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        body: Option<Value>,
    ) -> Result<Value, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(format!("`{url}`: only http and https URLs"));
        }
        let host = uri
            .host()
            .ok_or_else(|| format!("`{url}` has no host"))?
            .to_string();
        let (body, json_body) = match body {
            None => (Bytes::new(), false),
            Some(Value::String(text)) => (Bytes::from(text), false),
            Some(other) => (Bytes::from(other.to_string()), true),
        };
        let mut request = http::Request::builder().method(method).uri(uri);
        if json_body
            && !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in headers {
            // Refused when the workflow is stored; a definition stored
            // before that was checked is held to it here.
            if http::HeaderName::from_bytes(name.as_bytes())
                .is_ok_and(|h| wasmatic_workflows::is_forbidden_header(&h))
            {
                return Err(format!(
                    "the header {name:?} is set by the node, not by a workflow"
                ));
            }
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        // Dialled through the policy, as a guest's own request would be.
        let client = Client::new(
            Dial::Checked {
                policy: self.core.policy.clone(),
                rules: None,
            },
            CONNECT_TIMEOUT,
        );
        let response = client.send(request).await.map_err(|e| match e {
            SendError::Connect(ConnectError::Refused(reason)) => reason,
            SendError::Connect(e) => format!("{host}: {e}"),
            SendError::Exchange(e) => format!("the request to {host} failed: {e}"),
        })?;
        let status = response.status().as_u16();
        let headers: serde_json::Map<String, Value> = response
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.into())))
            .collect();
        let text = Limited::new(response.into_body(), MAX_STEP_OUTPUT)
            .collect()
            .await
            .map_err(|e| format!("reading the answer of {host}: {e}"))?
            .to_bytes();
        let body = json_or_text(String::from_utf8_lossy(&text).into_owned());
        if status >= 400 {
            return Err(format!("{method} {url} answered {status}: {body}"));
        }
        Ok(json!({ "status": status, "headers": headers, "body": body }))
    }
}

/// `text` as JSON when it is JSON, else as a string.
fn json_or_text(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}
