//! A guest's audit log: what it reports through `wasmatic:guest/audit`,
//! kept in its run record within bounds, and written to the node's log in a
//! form that cannot forge the log's lines.

use wasmatic_api::show_size;

pub use wasmatic_state::AuditEntry;

/// Most audit entries, and most bytes of their messages, kept per call;
/// the rest are counted and logged by the node.
const MAX_AUDIT_ENTRIES: usize = 1000;
const MAX_AUDIT_BYTES: usize = 256 * 1024;

#[derive(Default)]
pub struct AuditLog {
    entries: Vec<AuditEntry>,
    bytes: usize,
    dropped: u64,
}

impl AuditLog {
    pub fn push(&mut self, entry: AuditEntry) {
        if self.entries.len() >= MAX_AUDIT_ENTRIES
            || self.bytes + entry.message.len() > MAX_AUDIT_BYTES
        {
            self.dropped += 1;
            return;
        }
        self.bytes += entry.message.len();
        self.entries.push(entry);
    }

    pub fn into_entries(mut self) -> Vec<AuditEntry> {
        if self.dropped > 0 {
            self.entries.push(AuditEntry {
                level: "warn".into(),
                message: format!(
                    "[wasmatic: {} more audit entries dropped past {MAX_AUDIT_ENTRIES} entries or {}]",
                    self.dropped,
                    show_size(MAX_AUDIT_BYTES as u64)
                ),
            });
        }
        self.entries
    }
}

/// Bytes of one audit message written to the node's log; the run record
/// keeps the message whole (within [`MAX_AUDIT_BYTES`]).
const MAX_LOGGED_AUDIT_LINE: usize = 1024;

/// `message` as one line of the node's log: control characters (newlines,
/// ANSI escapes, DEL, C1 controls) escaped as `\n` or `\u{1b}`, so a guest
/// cannot start a line of its own or recolour the terminal, and cut after
/// [`MAX_LOGGED_AUDIT_LINE`] bytes with a marker saying so.
pub fn log_safe(message: &str) -> String {
    let mut line = String::with_capacity(message.len().min(MAX_LOGGED_AUDIT_LINE) + 32);
    for (i, c) in message.char_indices() {
        if line.len() >= MAX_LOGGED_AUDIT_LINE {
            line.push_str(&format!(
                " [wasmatic: {} more bytes not logged]",
                message.len() - i
            ));
            break;
        }
        if c.is_control() {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_lines_cannot_forge_log_lines_or_drive_a_terminal() {
        assert_eq!(log_safe("all is well"), "all is well");
        assert_eq!(
            log_safe("ok\n2026-01-01T00:00:00Z ERROR forged"),
            "ok\\n2026-01-01T00:00:00Z ERROR forged"
        );
        assert_eq!(log_safe("\x1b[31mred\r\u{9b}"), "\\u{1b}[31mred\\r\\u{9b}");
        assert_eq!(log_safe("tab\there"), "tab\\there");
        let long = "é".repeat(2000);
        let logged = log_safe(&long);
        assert!(logged.starts_with(&"é".repeat(512)), "{logged}");
        assert!(
            logged.ends_with(" [wasmatic: 2976 more bytes not logged]"),
            "{logged}"
        );
        assert!(logged.len() < MAX_LOGGED_AUDIT_LINE + 64);
    }
}
