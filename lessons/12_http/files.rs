//! `--root DIR`: files served from a directory, and never from anywhere else.
//!
//! The path in a request is the client's to choose, and a hostile client chooses
//! `/../../etc/passwd`, or the same with its dots percent-encoded (`/%2e%2e/`), or a
//! path through a symbolic link that points out of DIR. Each is refused.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::response::{Body, FORBIDDEN, NOT_FOUND, OK, Response, SERVER_ERROR};

// ANCHOR: serve
/// The file at `path` (already percent-decoded) under `root` (absolute, with no
/// symbolic links in it: the server canonicalizes `--root` at start-up).
pub fn serve(root: &Path, path: &str) -> Response {
    let not_found = || Response::text(NOT_FOUND, &format!("nothing at {path}"));
    let forbidden = || Response::text(FORBIDDEN, &format!("{path} is not yours to ask for"));
    // 1. Build the path segment by segment. `..` is refused outright: decoding came
    //    first, so `%2e%2e` is caught here too, and so is `%2f` (a `/` once decoded).
    //    A name starting with `.` (`.git`, `.env`) is not served either.
    let mut relative = PathBuf::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => continue,
            ".." => return forbidden(),
            hidden if hidden.starts_with('.') => return not_found(),
            name => relative.push(name),
        }
    }
    // 2. Resolve symbolic links and check that the real path is still under root.
    //    `starts_with` compares whole components: /srv/www2 is not under /srv/www.
    //    The real path must not be hidden either: a link `cfg -> .env` inside root
    //    passes step 1 by its own name.
    let real = match fs::canonicalize(root.join(&relative)) {
        Ok(real) if real.starts_with(root) && !hidden_under(root, &real) => real,
        Ok(real) if real.starts_with(root) => return not_found(),
        Ok(_) => return forbidden(),
        Err(_) => return not_found(),
    };
    // 3. A directory means its index.html (checked again: it may be a link too). A
    //    file asked for as a directory (`/a.txt/`) is not there.
    let real = if real.is_dir() {
        match fs::canonicalize(real.join("index.html")) {
            Ok(index) if index.starts_with(root) && !hidden_under(root, &index) => index,
            Ok(index) if index.starts_with(root) => return not_found(),
            Ok(_) => return forbidden(),
            Err(_) => return not_found(),
        }
    } else if path.ends_with('/') {
        return not_found();
    } else {
        real
    };
    match open(&real) {
        Ok(Some((file, length))) => Response {
            status: OK,
            content_type: content_type(&real),
            headers: vec![("X-Content-Type-Options", "nosniff".into())],
            body: Body::File(file, length),
        },
        Ok(None) => not_found(),
        Err(err) if err.kind() == io::ErrorKind::PermissionDenied => forbidden(),
        Err(err) => Response::text(SERVER_ERROR, &format!("cannot read {path}: {err}")),
    }
}
// ANCHOR_END: serve

/// Does any part of `real` below `root` start with `.`?
fn hidden_under(root: &Path, real: &Path) -> bool {
    real.strip_prefix(root).is_ok_and(|below| {
        below
            .components()
            .any(|part| part.as_os_str().to_string_lossy().starts_with('.'))
    })
}

/// The open file and its length, or `None` if it is not a regular file (a fifo or a
/// device would block or never end). O_NONBLOCK: opening a fifo for reading would
/// otherwise wait for a writer, for ever; on a regular file it changes nothing.
fn open(path: &Path) -> io::Result<Option<(File, u64)>> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Ok(None);
    }
    Ok(Some((file, metadata.len())))
}

// ANCHOR: content_type
/// The Content-Type for a file, by its extension (what Python's `mimetypes` does).
/// The browser trusts it: an `.html` file served as `text/plain` shows as source.
pub fn content_type(path: &Path) -> &'static str {
    let extension = path
        .extension()
        .and_then(|extension| extension.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("json") => "application/json",
        Some("txt" | "md" | "rs" | "py") => "text/plain; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("ico") => "image/x-icon",
        Some("pdf") => "application/pdf",
        Some("wasm") => "application/wasm",
        _ => "application/octet-stream",
    }
}
// ANCHOR_END: content_type
