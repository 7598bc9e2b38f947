//! The operator's stdout and stderr, written to the node's log one line at
//! a time. Each line is a log event, so it is formatted as the rest of the
//! log (`--log-format json` included) and carries the span of the request
//! being answered, with its id: the guest writes while the host polls its
//! call inside that span.

use std::sync::{Arc, Mutex};

use wasmatic_sandbox::output::Sink;

/// Longest line logged as one: past it, what is buffered is logged and the
/// rest of the line follows as another, so that an operator printing
/// without newlines holds no more than this.
const MAX_LINE: usize = 8 * 1024;

/// One of the operator's output streams (`stdout` or `stderr`); clones
/// share the unfinished line.
#[derive(Clone)]
pub struct LoggedOutput {
    stream: &'static str,
    partial: Arc<Mutex<Vec<u8>>>,
}

impl LoggedOutput {
    pub fn new(stream: &'static str) -> Self {
        LoggedOutput {
            stream,
            partial: Arc::default(),
        }
    }

    fn log(&self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        let line = wasmatic_guests::audit_log::log_safe(line.trim_end_matches('\r'));
        tracing::info!(target: "operator", stream = self.stream, "{line}");
    }
}

impl Sink for LoggedOutput {
    fn push(&self, bytes: &[u8]) {
        let mut partial = self.partial.lock().unwrap_or_else(|p| p.into_inner());
        for &b in bytes {
            if b == b'\n' {
                self.log(&partial);
                partial.clear();
            } else {
                partial.push(b);
                if partial.len() >= MAX_LINE {
                    self.log(&partial);
                    partial.clear();
                }
            }
        }
    }
}
