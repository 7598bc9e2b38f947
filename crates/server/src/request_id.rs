//! Request ids: every request gets one, kept from the client when it sent
//! a usable `x-request-id` (so that a caller's or a proxy's id follows the
//! request through the node's log), made up here otherwise. The id is
//! answered in `x-request-id`, handed to the operator in the same header,
//! carried by every error body and by every log line of the request (a
//! tracing span around its handling).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use hyper::header::{HeaderMap, HeaderName, HeaderValue};

/// The header naming a request, both ways (a constant name: inserting it
/// parses nothing).
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest id kept from a client: room for a UUID or a trace id, too short
/// to fill log lines.
const MAX_LEN: usize = 64;

/// Whether a client's id is kept: 1 to 64 of `A-Z a-z 0-9 . _ -`. Anything
/// else (spaces, quotes, control characters) could forge or garble a log
/// line, and is replaced.
pub fn is_well_formed(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Makes up ids unique to this node process: the time it started and its
/// process id, then a counter (`19a2b3c4d5e-4f2-17`).
pub struct RequestIds {
    prefix: String,
    next: AtomicU64,
}

impl RequestIds {
    pub fn new() -> Self {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        RequestIds {
            prefix: format!("{started:x}-{:x}", std::process::id()),
            next: AtomicU64::new(1),
        }
    }

    /// The request's id: the client's when well-formed, else a new one;
    /// written back into `headers` so that the operator reads the same.
    /// Also answered as the header value, to be set on the response (a
    /// clone of it shares its bytes).
    pub fn assign(&self, headers: &mut HeaderMap) -> (String, Option<HeaderValue>) {
        let given = headers
            .get(HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|id| is_well_formed(id))
            .map(str::to_string);
        let id = given.unwrap_or_else(|| self.make_up());
        // Well-formed ids are valid header values; `insert` drops any
        // other copies the client sent.
        let value = HeaderValue::from_str(&id).ok();
        if let Some(value) = &value {
            headers.insert(HEADER, value.clone());
        }
        (id, value)
    }

    /// The next id of this process: the prefix, a dash and the counter in
    /// decimal, written straight into a string of the right size (a
    /// `format!` here was a visible share of a short request's time).
    fn make_up(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(n);
        let mut id = String::with_capacity(self.prefix.len() + 1 + digits.len());
        id.push_str(&self.prefix);
        id.push('-');
        id.push_str(digits);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_well_formed_id_is_kept_and_anything_else_replaced() {
        let ids = RequestIds::new();
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, HeaderValue::from_static("abc-123_X.9"));
        assert_eq!(ids.assign(&mut headers).0, "abc-123_X.9");

        for bad in ["", "has space", "quote\"", &"x".repeat(65)] {
            let mut headers = HeaderMap::new();
            headers.insert(HEADER, HeaderValue::from_str(bad).unwrap());
            let (id, value) = ids.assign(&mut headers);
            assert_eq!(value.as_ref().map(|v| v.as_bytes()), Some(id.as_bytes()));
            assert_ne!(id, bad);
            assert!(is_well_formed(&id), "{id}");
            assert_eq!(headers.get(&HEADER).unwrap(), id.as_str());
        }
        let (a, b) = (
            ids.assign(&mut HeaderMap::new()).0,
            ids.assign(&mut HeaderMap::new()).0,
        );
        assert_ne!(a, b);
    }

    #[test]
    fn made_up_ids_count_in_decimal_after_the_prefix() {
        let ids = RequestIds::new();
        let prefix = format!("{}-", ids.prefix);
        for expected in [1u64, 2, 3, 4, 5, 6, 7, 8, 9, 10] {
            assert_eq!(ids.make_up(), format!("{prefix}{expected}"));
        }
        ids.next.store(u64::MAX, Ordering::Relaxed);
        assert_eq!(ids.make_up(), format!("{prefix}{}", u64::MAX));
        ids.next.store(0, Ordering::Relaxed);
        assert_eq!(ids.make_up(), format!("{prefix}0"));
    }
}
