//! The words this lesson's own log lines begin with, declared once. The words every
//! server shares (`connected`, `received`, `error:` ...) are in `workbook::log`; these
//! are the framework's and the handler's. The server uses them, and so does
//! `tests/10_socketserver.rs` (which includes this file): reword a line here, and the
//! server and its tests change together.

/// A reply sent: `replied to 127.0.0.1:54012 -> 127.0.0.1:10010: "Sun Nov 22 ..."`.
pub const REPLIED: &str = "replied";
/// A UDP reply cut to the largest datagram: `truncated the reply to 127.0.0.1:40001 ...`.
pub const TRUNCATED: &str = "truncated";
/// A client turned away by `verify_request`: `rejected 127.0.0.1:54012 -> ...: not in ...`.
pub const REJECTED: &str = "rejected";
/// A child process collected: `reaped pid 4101: exit status 0 (0 children still running)`.
pub const REAPED: &str = "reaped pid";
