//! The web console: a page, a script and a style sheet, embedded in the
//! operator (nothing is fetched at run time, so it works offline) and
//! served at `/ui/`. The script speaks the same HTTP API as any client.
//!
//! Every answer carries a strict Content-Security-Policy: only the node's
//! own script and style run (no inline script, no `eval`, nothing from
//! elsewhere), so text a handler returns can never become code on the page
//! even if the script had a bug that inserted it as HTML.

use std::borrow::Cow;

use crate::http::{Request, Response};

const INDEX: &str = include_str!("../ui/index.html");
const SCRIPT: &str = include_str!("../ui/app.js");
const STYLE: &str = include_str!("../ui/app.css");

const POLICY: &str =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// `GET /ui/…`: an asset by its file name; the page for `/ui/` itself.
pub fn asset(file: &[&str]) -> Result<Response, Response> {
    let (content_type, text) = match file {
        [] | [""] | ["index.html"] => ("text/html; charset=utf-8", INDEX),
        ["app.js"] => ("text/javascript; charset=utf-8", SCRIPT),
        ["app.css"] => ("text/css; charset=utf-8", STYLE),
        _ => {
            return Err(Response::error(
                404,
                &format!("no console file `{}`", file.join("/")),
            ))
        }
    };
    Ok(Response {
        status: 200,
        content_type,
        headers: vec![
            ("content-security-policy", POLICY.into()),
            ("x-content-type-options", "nosniff".into()),
            ("referrer-policy", "no-referrer".into()),
            // The files change with the node's binary: ask again each time.
            ("cache-control", "no-cache".into()),
        ],
        body: Cow::Borrowed(text.as_bytes()),
    })
}

/// Whether a `GET /` comes from a browser (it accepts HTML): it is sent
/// to the console, while API clients keep the answer they had.
pub fn wants_html(req: &Request) -> bool {
    req.header("accept")
        .as_deref()
        .and_then(|a| std::str::from_utf8(a).ok())
        .is_some_and(|a| a.to_ascii_lowercase().contains("text/html"))
}

/// `303 See Other` to the console.
pub fn to_console() -> Response {
    Response {
        status: 303,
        content_type: "",
        headers: vec![("location", "/ui/".into())],
        body: Cow::Borrowed(&[]),
    }
}
