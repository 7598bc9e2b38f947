//! The command-line client: `wasmatic register`, `run`, `ls`, … speak the
//! node's HTTP API (operator/src/routes/table.rs) to the node at `--node`.
//!
//! May depend on: `wasmatic-api` (the token variable), `wasmatic-net` (the
//! one HTTP client). It knows the node only through
//! its HTTP API.
//!
//! People get tables; `--json` prints the node's JSON as it answered it.
//! Failures print a message on stderr and exit with a code that tells
//! scripts what went wrong (see the `EXIT_` constants).

mod args;
mod commands;
mod jobs;
mod runs;
mod table;
mod transport;

use std::io::Write;

pub use args::ClientCommand;

/// The node answered with an error (or a job or workflow run failed).
pub const EXIT_NODE_ERROR: i32 = 1;
/// The command was wrong: bad arguments, a file that cannot be read. Clap
/// exits with 2 for the errors it finds, so this is the same.
pub const EXIT_USAGE: i32 = 2;
/// The node could not be reached, or answered something that is not HTTP.
pub const EXIT_UNREACHABLE: i32 = 3;

/// The node's token, sent as `Authorization: Bearer TOKEN`, as the
/// operator checks it.
use wasmatic_api::TOKEN_ENV;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Usage(String),
    #[error("{message} (HTTP {status})")]
    Node { status: u16, message: String },
    /// What the node ran failed, and said so in a successful answer.
    #[error("{0}")]
    Failed(String),
    #[error("cannot reach the node at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{0}")]
    Transport(String),
}

impl ClientError {
    fn exit_code(&self) -> i32 {
        match self {
            ClientError::Usage(_) => EXIT_USAGE,
            ClientError::Node { .. } | ClientError::Failed(_) => EXIT_NODE_ERROR,
            ClientError::Unreachable { .. } | ClientError::Transport(_) => EXIT_UNREACHABLE,
        }
    }
}

/// Runs a client command; returns the process's exit code.
pub fn run(command: ClientCommand, runtime: &tokio::runtime::Runtime) -> i32 {
    let token = match token() {
        Ok(token) => token,
        Err(e) => return report(&e, false),
    };
    let has_token = token.is_some();
    match runtime.block_on(commands::dispatch(command, token)) {
        Ok(()) => 0,
        Err(e) => report(&e, has_token),
    }
}

fn report(error: &ClientError, has_token: bool) -> i32 {
    eprintln!("error: {error}");
    if matches!(error, ClientError::Node { status: 401, .. }) && !has_token {
        eprintln!("hint: set ${TOKEN_ENV} to the node's token");
    }
    error.exit_code()
}

/// `$WASMATIC_TOKEN`, when set and not empty.
fn token() -> Result<Option<String>, ClientError> {
    match std::env::var(TOKEN_ENV) {
        Ok(token) if token.is_empty() => Ok(None),
        Ok(token) => Ok(Some(token)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(ClientError::Usage(format!(
            "${TOKEN_ENV} is not valid UTF-8"
        ))),
    }
}

/// Writes `text` to stdout. A closed pipe (`wasmatic ls | head -1`) is not
/// an error: the reader has what it wanted. Answers whether the text went.
fn emit(text: &str) -> bool {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_ok()
}

/// `text` with a line end, unless it has one.
fn emit_line(text: &str) -> bool {
    if text.ends_with('\n') {
        emit(text)
    } else {
        emit(&format!("{text}\n"))
    }
}

/// Percent-encodes `s` for a path segment or a query value: everything but
/// the unreserved characters, so that `/`, `&`, `=` and `%` in a name or a
/// value arrive as they were (the operator decodes `%XX`).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for byte in s.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A command-line value as JSON: the JSON it spells if it parses, else
/// the string itself (`42` is a number, `hello` and `"42"` strings).
fn json_or_string(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_string()))
}

/// Reads a file named on the command line.
fn read_file(path: &std::path::Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path)
        .map_err(|e| ClientError::Usage(format!("cannot read {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_keeps_unreserved_and_escapes_the_rest() {
        assert_eq!(encode("echo-1_a.b~"), "echo-1_a.b~");
        assert_eq!(
            encode("acme:cipher/audit-log=auditor"),
            "acme%3Acipher%2Faudit-log%3Dauditor"
        );
        assert_eq!(encode("a b&c%"), "a%20b%26c%25");
        assert_eq!(encode("é"), "%C3%A9");
    }

    #[test]
    fn arguments_are_json_when_they_parse() {
        assert_eq!(json_or_string("42"), serde_json::json!(42));
        assert_eq!(json_or_string("\"42\""), serde_json::json!("42"));
        assert_eq!(json_or_string("[1, 2]"), serde_json::json!([1, 2]));
        assert_eq!(json_or_string("hello"), serde_json::json!("hello"));
        assert_eq!(json_or_string("{bad"), serde_json::json!("{bad"));
    }
}
