//! The node's log: lines on stderr, as text for people or as JSON for log
//! shippers. Either way a line logged while a request is handled carries
//! the request's id, from the `request` span around its handling.

/// How log lines are written (`--log-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `2026-… INFO request{request_id=…}: wasmatic::serve: …`, coloured on
    /// a terminal.
    #[default]
    Text,
    /// One JSON object a line: `timestamp`, `level`, `target`, the event's
    /// fields (`message` among them) at the top level, and `span` (the
    /// request span with its `request_id`) when there is one.
    Json,
}

/// Installs the subscriber for the process; `RUST_LOG` sets the level
/// (default `info`).
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}
