//! Reading what a request says: names, bodies, paging; and turning the
//! host's errors into answers.

use crate::http::{percent_decode, Request, Response};
use crate::wasmatic::operator::runs::{Page, PageRequest};
use crate::wasmatic::operator::types::Error;

/// Whether `name` is a valid handler name: `[a-z0-9][a-z0-9_-]{0,63}`.
/// Checked here so that nothing is written for a bad name; the host checks
/// again, as it trusts no operator.
fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-')
}

/// Decodes and checks a handler name taken from the path or the query.
pub fn handler_name(raw: &str) -> Result<String, Response> {
    let name = percent_decode(raw)?;
    if !is_valid_name(&name) {
        return Err(Response::error(
            400,
            &format!(
                "{:?} is not a handler name: use 1 to 64 of a-z, 0-9, _ and -, starting with a letter or digit",
                name
            ),
        ));
    }
    Ok(name)
}

pub fn host_error(e: Error) -> Response {
    match e {
        Error::NotFound(m) => Response::error(404, &m),
        Error::Invalid(m) => Response::error(400, &m),
        Error::Conflict(m) => Response::error(409, &m),
        Error::TooLarge(m) => Response::error(413, &m),
        Error::Failed(m) => Response::error(500, &m),
        Error::TimedOut(m) => Response::error(504, &m),
        Error::Busy(m) => Response::error(503, &m).with_header("retry-after", "1".into()),
        Error::Internal(m) => Response::error(500, &m),
    }
}

pub fn body(req: &Request) -> Result<&[u8], Response> {
    req.body()
}

pub fn json_body<T: serde::de::DeserializeOwned>(
    req: &Request,
    shape: &str,
) -> Result<T, Response> {
    serde_json::from_slice(body(req)?)
        .map_err(|e| Response::error(400, &format!("expected {shape}: {e}")))
}

/// Runs listed when no `limit` is given, and the most that may be asked for.
const DEFAULT_RUNS: u32 = 20;
const MAX_RUNS: u32 = 1000;

/// `?limit=N&before=ID` of a runs listing.
pub fn page_request(req: &Request) -> Result<PageRequest, Response> {
    let limit = match req.query_param("limit") {
        None => DEFAULT_RUNS,
        Some(raw) => {
            let raw = raw?;
            match raw.parse::<u32>() {
                Ok(n) if (1..=MAX_RUNS).contains(&n) => n,
                _ => {
                    return Err(Response::error(
                        400,
                        &format!("limit must be a number from 1 to {MAX_RUNS}, not `{raw}`"),
                    ))
                }
            }
        }
    };
    let before = match req.query_param("before") {
        None => None,
        Some(raw) => {
            let raw = raw?;
            Some(raw.parse::<u64>().map_err(|_| {
                Response::error(400, &format!("before must be a run id, not `{raw}`"))
            })?)
        }
    };
    Ok(PageRequest { limit, before })
}

/// A page of runs: the array of runs, and, when more follow, a `Link`
/// header to the next page (`rel="next"`), as GitHub's API pages.
pub fn runs_page(req: &Request, page: Page, limit: u32) -> Response {
    with_next(Response::json(200, &page.runs), req, limit, page.next)
}

/// `response` with a `Link` to the page of runs before `next`, if any.
pub fn with_next(response: Response, req: &Request, limit: u32, next: Option<u64>) -> Response {
    match next {
        Some(next) => response.with_header(
            "link",
            format!("<{}?limit={limit}&before={next}>; rel=\"next\"", req.path()),
        ),
        None => response,
    }
}
