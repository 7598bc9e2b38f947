//! A guest's captured stdout or stderr: kept up to a limit, the rest
//! counted, so that a chatty guest is neither stopped nor able to exhaust
//! the host's memory. Handlers, jobs and the outbound policy (which writes
//! its refusals to the guest's stderr) share it. [`StreamOf`] makes a
//! [`Sink`] (this, or the operator's log lines) a guest's stream.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use wasmatic_api::show_size;

pub const TRUNCATED_MARK: &str = "[wasmatic: output truncated";

/// A guest's stdout or stderr: keeps the first `limit` bytes, counts the
/// rest and accepts all of it, so that a chatty guest is neither stopped nor
/// able to exhaust the host's memory.
#[derive(Clone)]
pub struct CapturedOutput(Arc<Mutex<Captured>>);

struct Captured {
    kept: Vec<u8>,
    dropped: u64,
    limit: usize,
}

impl CapturedOutput {
    pub fn new(limit: usize) -> Self {
        CapturedOutput(Arc::new(Mutex::new(Captured {
            kept: Vec::new(),
            dropped: 0,
            limit,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Captured> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, bytes: &[u8]) {
        let mut c = self.lock();
        let room = c.limit.saturating_sub(c.kept.len());
        let (keep, drop) = bytes.split_at(room.min(bytes.len()));
        c.kept.extend_from_slice(keep);
        c.dropped += drop.len() as u64;
    }

    /// Adds a line of the host's own (an outbound refusal, say).
    pub fn write_line(&self, line: &str) {
        self.push(format!("{line}\n").as_bytes());
    }

    /// Whether anything was dropped.
    pub fn truncated(&self) -> bool {
        self.lock().dropped > 0
    }

    /// What was kept, with a last line saying how much was not; empties it
    /// for the next call.
    pub fn take_text(&self) -> String {
        let text = self.text();
        let mut c = self.lock();
        c.kept.clear();
        c.dropped = 0;
        text
    }

    /// What was kept, with a last line saying how much was not.
    pub fn text(&self) -> String {
        let c = self.lock();
        let mut text = String::from_utf8_lossy(&c.kept).into_owned();
        if c.dropped > 0 {
            if !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&format!(
                "{TRUNCATED_MARK} after {}: {} more bytes dropped]\n",
                show_size(c.limit as u64),
                c.dropped
            ));
        }
        text
    }
}

/// What a guest's output stream writes into: every write is accepted at
/// once and handed over whole, so that a guest never waits on the host's
/// log or buffer, and the sink alone decides what it keeps.
pub trait Sink: Clone + Send + Sync + 'static {
    fn push(&self, bytes: &[u8]);
}

impl Sink for CapturedOutput {
    fn push(&self, bytes: &[u8]) {
        CapturedOutput::push(self, bytes)
    }
}

/// A guest's stdout or stderr over a [`Sink`]: what WASI's streams and
/// tokio's `AsyncWrite` need of it, written once for every sink (a call's
/// captured output, the operator's log lines).
#[derive(Clone)]
pub struct StreamOf<S>(pub S);

impl<S: Sink> IsTerminal for StreamOf<S> {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl<S: Sink> StdoutStream for StreamOf<S> {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl<S: Sink> OutputStream for StreamOf<S> {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.0.push(&bytes);
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
impl<S: Sink> Pollable for StreamOf<S> {
    async fn ready(&mut self) {}
}

impl<S: Sink> tokio::io::AsyncWrite for StreamOf<S> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.0.push(buf);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_output_keeps_the_first_bytes_and_says_what_it_dropped() {
        let out = CapturedOutput::new(8);
        out.push(b"hello, ");
        out.push(b"world");
        assert_eq!(
            out.text(),
            "hello, w\n[wasmatic: output truncated after 8 bytes: 4 more bytes dropped]\n"
        );
        let quiet = CapturedOutput::new(8);
        quiet.push(b"hi");
        assert_eq!(quiet.text(), "hi");
    }
}
