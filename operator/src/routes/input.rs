//! Reading what a request says: names, bodies, paging; and turning the
//! host's errors into answers.

use crate::http::{percent_decode, Request, Response};
use crate::wasmatic::operator::runs::{Page, PageRequest};
use crate::wasmatic::operator::types::Error;
use wasmatic_api::{is_valid_name, ErrorKind, NAME_RULE};

/// Decodes and checks a handler name taken from the path or the query:
/// checked here so that nothing is written for a bad name; the host checks
/// again, as it trusts no operator.
pub fn handler_name(raw: &str) -> Result<String, Response> {
    let name = percent_decode(raw)?;
    if !is_valid_name(&name) {
        return Err(Response::error(
            400,
            &format!("{name:?} is not a handler name: {NAME_RULE}"),
        ));
    }
    Ok(name)
}

/// The answer to an error of the host: its kind's status
/// ([`ErrorKind::status`]), and `retry-after` when the node is busy.
pub fn host_error(e: Error) -> Response {
    let (kind, message) = match e {
        Error::NotFound(m) => (ErrorKind::NotFound, m),
        Error::Invalid(m) => (ErrorKind::Invalid, m),
        Error::Conflict(m) => (ErrorKind::Conflict, m),
        Error::TooLarge(m) => (ErrorKind::TooLarge, m),
        Error::Failed(m) => (ErrorKind::Failed, m),
        Error::TimedOut(m) => (ErrorKind::TimedOut, m),
        Error::Busy(m) => (ErrorKind::Busy, m),
        Error::Internal(m) => (ErrorKind::Internal, m),
    };
    let response = Response::error(kind.status(), &message);
    if kind == ErrorKind::Busy {
        response.with_header("retry-after", "1".into())
    } else {
        response
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

/// `DELETE …/ID` of something the host removes by id (a schedule, a
/// trigger): 204, or the host's error.
pub fn remove_by_id(
    raw: &str,
    remove: fn(&str) -> Result<(), Error>,
) -> Result<Response, Response> {
    let id = percent_decode(raw)?;
    remove(&id).map_err(host_error)?;
    Ok(Response::no_content())
}

/// `GET …/ID/runs`: a page of the runs of something the host keeps by id.
pub fn runs_by_id(
    req: &Request,
    raw: &str,
    runs_of: fn(&str, PageRequest) -> Result<Page, Error>,
) -> Result<Response, Response> {
    let id = percent_decode(raw)?;
    let request = page_request(req)?;
    let page = runs_of(&id, request).map_err(host_error)?;
    Ok(runs_page(req, page, request.limit))
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
