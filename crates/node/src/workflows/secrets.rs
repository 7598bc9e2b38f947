//! Workflow secrets: values a node runner sets through token-guarded routes
//! and workflows name as `{{ secrets.NAME }}` in an `http` step's `url`,
//! `headers` or `body`. They are stored apart from the definitions (which
//! anyone may read), read only by the runner for the request they are for,
//! and never answered, logged or put in a run record: an error or a
//! response that carries one has it replaced by `[secret NAME]`.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::Workflows;
use crate::blocking;
use wasmatic_api::NodeError;
use wasmatic_state::now_ms;
use wasmatic_workflows::{self as workflows, Secrets, StepKind};

/// Most secrets a node keeps, and the longest value.
const MAX_SECRETS: usize = 1000;
const MAX_SECRET_BYTES: usize = 64 << 10;

impl Workflows {
    /// Sets secret `name` to `value`; answers whether it is new.
    pub async fn put_secret(&self, name: &str, value: &str) -> Result<bool, NodeError> {
        if !is_secret_name(name) {
            return Err(NodeError::Invalid(format!(
                "{name:?} is not a secret name: use 1 to 64 of a-z, 0-9 and _, starting with a letter or _ (a template reads it as `secrets.NAME`)"
            )));
        }
        if value.is_empty() || value.len() > MAX_SECRET_BYTES {
            return Err(NodeError::Invalid(format!(
                "a secret's value is 1 byte to {} KiB, not {} bytes",
                MAX_SECRET_BYTES >> 10,
                value.len()
            )));
        }
        let state = self.core.state.clone();
        let (name, value) = (name.to_string(), value.to_string());
        blocking(move || {
            let known = state.secrets()?;
            if known.len() >= MAX_SECRETS && !known.iter().any(|s| s.name == name) {
                return Ok(Err(NodeError::Busy(format!(
                    "the node keeps {MAX_SECRETS} secrets, its most; remove one first"
                ))));
            }
            state.put_secret(&name, &value, now_ms()).map(Ok)
        })
        .await??
    }

    /// Forgets secret `name`.
    pub async fn remove_secret(&self, name: &str) -> Result<(), NodeError> {
        let state = self.core.state.clone();
        let owned = name.to_string();
        if blocking(move || state.remove_secret(&owned)).await?? {
            Ok(())
        } else {
            Err(NodeError::NotFound(format!("no secret `{name}`")))
        }
    }

    /// The secrets' names and times, as a JSON array; never their values.
    pub async fn secrets(&self) -> Result<String, NodeError> {
        let state = self.core.state.clone();
        let secrets = blocking(move || state.secrets()).await??;
        let listed: Vec<Value> = secrets
            .iter()
            .map(
                |s| json!({"name": s.name, "created_at": s.created_at, "updated_at": s.updated_at}),
            )
            .collect();
        Ok(Value::from(listed).to_string())
    }

    /// The secrets an `http` step's request reads, or why the step cannot
    /// run; `None` when it reads none.
    pub(crate) async fn step_secrets(&self, kind: &StepKind) -> Result<Option<Secrets>, String> {
        let StepKind::Http {
            url, headers, body, ..
        } = kind
        else {
            return Ok(None);
        };
        let mut names = BTreeSet::new();
        workflows::secret_names(&Value::String(url.clone()), &mut names);
        for (_, value) in headers {
            workflows::secret_names(&Value::String(value.clone()), &mut names);
        }
        if let Some(body) = body {
            workflows::secret_names(body, &mut names);
        }
        if names.is_empty() {
            return Ok(None);
        }
        let state = self.core.state.clone();
        let wanted: Vec<String> = names.iter().cloned().collect();
        let values = blocking(move || state.secret_values(&wanted))
            .await
            .and_then(|read| read.map_err(NodeError::from))
            .map_err(|e| format!("cannot read the step's secrets: {e}"))?;
        if let Some(missing) = names.iter().find(|n| !values.contains_key(*n)) {
            return Err(format!(
                "no secret `{missing}`: set it with PUT /secrets/{missing}"
            ));
        }
        Ok(Some(values))
    }
}

/// Whether `name` can name a secret: a template reads it as `secrets.NAME`,
/// so it is an identifier (`-` would read as a minus).
fn is_secret_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=64).contains(&bytes.len())
        && (bytes[0].is_ascii_lowercase() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
}

/// `text` with every secret value in it replaced by `[secret NAME]`.
pub(crate) fn scrub(text: &str, secrets: &Secrets) -> String {
    let mut text = text.to_string();
    for (name, value) in secrets {
        if text.contains(value.as_str()) {
            text = text.replace(value.as_str(), &format!("[secret {name}]"));
        }
    }
    text
}

/// `value` with every secret in its strings replaced, as [`scrub`] does.
pub(crate) fn scrub_value(value: Value, secrets: &Secrets) -> Value {
    match value {
        Value::String(s) => Value::String(scrub(&s, secrets)),
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| scrub_value(v, secrets)).collect())
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (scrub(&k, secrets), scrub_value(v, secrets)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_scrubbed_from_text_and_values() {
        let secrets: Secrets = [("key".to_string(), "sk_live_1".to_string())].into();
        assert_eq!(
            scrub("cannot connect to https://x/?k=sk_live_1", &secrets),
            "cannot connect to https://x/?k=[secret key]"
        );
        let echoed = json!({"headers": {"authorization": "Bearer sk_live_1"}, "n": 1});
        assert_eq!(
            scrub_value(echoed, &secrets),
            json!({"headers": {"authorization": "Bearer [secret key]"}, "n": 1})
        );
    }
}
