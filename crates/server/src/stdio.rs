//! The operator's stdout and stderr, written to the node's log one line at
//! a time. Each line is a log event, so it is formatted as the rest of the
//! log (`--log-format json` included) and carries the span of the request
//! being answered, with its id: the guest writes while the host polls its
//! call inside that span.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

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

    fn log(&self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        let line = wasmatic_guests::audit_log::log_safe(line.trim_end_matches('\r'));
        tracing::info!(target: "operator", stream = self.stream, "{line}");
    }
}

impl IsTerminal for LoggedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LoggedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for LoggedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LoggedOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for LoggedOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
