//! Lesson 10, the framework: a small Rust version of Python's `socketserver`.
//!
//! Python splits a server in two: a *request handler* says what to do with one client,
//! a *server* says how clients are taken in and how many are served at once. The
//! framework is four files, in reading order:
//!
//! 1. `framework/request.rs`: the [`Handler`] trait (`setup`, `handle`, `finish`, on a
//!    fresh handler for every request), and what a handler gets: [`StreamRequest`]
//!    (TCP: `rfile`, `wfile`, the client's address) or [`DatagramRequest`] (UDP: the
//!    datagram, and `reply` to its sender);
//! 2. `framework/servers.rs`: [`TcpServer`] and [`UdpServer`] (socket, bind, listen,
//!    `serve_forever`, `server_close`), their [`ServerOptions`] (`allow_reuse_address`,
//!    `request_queue_size`, `verify_request`, `handle_error`), and the
//!    [`ShutdownHandle`] whose `shutdown()` another thread (the signal handler's) calls;
//! 3. `framework/concurrency.rs`: Python's mixins, how requests are run: the
//!    [`Concurrency`] trait, [`Synchronous`] and [`Threading`];
//! 4. `framework/forking.rs`: [`Forking`], a child process per request: fork, the
//!    SIGCHLD handler, reaping, and the child's own signal handlers and log.
//!
//! The serving loop waits in poll(2) on its socket and on one end of a socket pair, the
//! *wake-up*: `shutdown()`, a request thread that ends, a child process that exits
//! (SIGCHLD) and a child that has a line to log each write a byte to the other end.
//! So the loop sleeps until there is something to do, and never polls on a timer.

mod concurrency;
mod forking;
mod request;
mod servers;

use std::time::Duration;

pub use concurrency::{Concurrency, Synchronous, Threading};
pub use forking::Forking;
pub use request::{DatagramRequest, Handler, StreamRequest};
pub use servers::{BaseServer, ServerOptions, TcpServer, UdpServer};

/// How long requests still running at shutdown get to finish before they are cut off.
pub const GRACE: Duration = Duration::from_secs(1);

// ANCHOR: log_line
/// Logs one line, from a handler or from the framework: a request may run in a forked
/// child, so it must not use `workbook::log!` directly. In the server's own process the
/// line goes to `workbook::log`; in a forked child it is sent to the parent, which
/// logs it (forking.rs says why).
pub fn log_line(line: String) {
    if !forking::send_to_parent(&line) {
        workbook::log::line(line);
    }
}
// ANCHOR_END: log_line
