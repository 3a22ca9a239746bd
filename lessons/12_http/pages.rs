//! What the server answers to a request it understood: its routes, and the page that
//! shows a browser what it sent.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use crate::files;
use crate::request::Request;
use crate::response::{METHOD_NOT_ALLOWED, NOT_FOUND, OK, Response};

/// The seed's text, at `/hello`.
pub const HELLO: &str = "Hello WORD";
/// A 16x16 icon, so that the browser's request for it gets a real answer.
const FAVICON: &[u8] = include_bytes!("favicon.ico");

/// Where the request came from, for the page.
pub struct Origin {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// 1 for the connection's first request, 2 for the next...
    pub number: u32,
}

// ANCHOR: answer
/// The response to a parsed request. GET and HEAD only (HEAD gets the same head as
/// GET, without the body: `response::send` leaves it out); `/`, `/hello` and
/// `/favicon.ico` are the server's own; any other path is a file under `--root`, if
/// one was given.
pub fn answer(request: &Request, origin: &Origin, root: Option<&Path>) -> Response {
    if let Some(refusal) = refusal(request) {
        return refusal;
    }
    match request.path.as_str() {
        "/" => what_you_sent(request, origin),
        "/hello" => Response::new(OK, "text/plain; charset=utf-8", HELLO),
        "/favicon.ico" => Response::new(OK, "image/x-icon", FAVICON),
        path => match root {
            Some(root) => files::serve(root, path),
            None => Response::text(NOT_FOUND, &format!("nothing at {path}")),
        },
    }
}

/// The refusal of a request that can be refused from its head alone, before its
/// body is read: a method other than GET or HEAD.
pub fn refusal(request: &Request) -> Option<Response> {
    if request.method != "GET" && request.method != "HEAD" {
        let why = format!("{} is not allowed here: GET or HEAD", request.method);
        return Some(Response::text(METHOD_NOT_ALLOWED, &why).with_header("Allow", "GET, HEAD"));
    }
    None
}
// ANCHOR_END: answer

// ANCHOR: escape
/// Text made safe to put in HTML: `<script>` in a header becomes `&lt;script&gt;`,
/// which the browser shows as text instead of running it. Every byte a client sent
/// goes through here before it goes into the page.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            ch => out.push(ch),
        }
    }
    out
}
// ANCHOR_END: escape

// ANCHOR: what_you_sent
/// The page at `/`: the request line, every header, both ends of the connection.
fn what_you_sent(request: &Request, origin: &Origin) -> Response {
    // HEAD must get exactly the headers GET would get, Content-Length included:
    // so the page for HEAD is the page GET would get.
    let line = match request.line.strip_prefix("HEAD ") {
        Some(rest) => format!("GET {rest}"),
        None => request.line.clone(),
    };
    let mut rows = String::new();
    for (name, value) in &request.headers {
        let _ = writeln!(
            rows,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape_html(name),
            escape_html(value)
        );
    }
    let page = format!(
        "<!DOCTYPE html>\n\
         <html lang=\"en\">\n\
         <head>\n\
         <meta charset=\"utf-8\">\n\
         <title>What your browser sent</title>\n\
         <style>body {{ font-family: sans-serif; max-width: 60em; margin: 2em auto; }} \
         th {{ text-align: left; padding-right: 1em; vertical-align: top; }} \
         td, pre {{ font-family: monospace; word-break: break-all; }}</style>\n\
         </head>\n\
         <body>\n\
         <h1>What your browser sent</h1>\n\
         <p>Request {number} on the connection from <code id=\"peer\">{peer}</code> \
         to <code id=\"local\">{local}</code>.</p>\n\
         <h2>Request line</h2>\n\
         <pre id=\"request-line\">{line}</pre>\n\
         <h2>Headers</h2>\n\
         <table id=\"headers\">\n{rows}</table>\n\
         <p>Also here: <a href=\"/hello\">/hello</a>, \
         <a href=\"/favicon.ico\">/favicon.ico</a>.</p>\n\
         </body>\n\
         </html>\n",
        number = origin.number,
        peer = origin.peer,
        local = origin.local,
        line = escape_html(&line),
    );
    Response::new(OK, "text/html; charset=utf-8", page)
        // It shows this request's headers (cookies too): no cache may keep it.
        .with_header("Cache-Control", "no-store")
}
// ANCHOR_END: what_you_sent
