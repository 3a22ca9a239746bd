//! Lesson 05, the server: an echo server that serves many clients from one thread,
//! asking the kernel with poll(2) which sockets are ready.
//!
//!   terminal 1: cargo run --bin 05_poll_server
//!   terminal 2: cargo run --bin 05_poll_client -- --conns 3 hello
//!
//! It is lesson 04's server with poll instead of select: the same clients, accepted,
//! read and echoed by src/echo_connection.rs, and a loop that asks with one array of
//! pollfds instead of three bit sets, for any descriptor number.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use workbook::cli::Cli;
use workbook::echo_connection::EchoServer;
use workbook::listener::{self, Accept};
use workbook::{exit_with_error, log, signal};

const DEFAULT_PORT: u16 = 8009;

fn main() {
    let args = Cli::new(
        "05_poll_server",
        "Lesson 05: an echo server that serves many clients from one thread with poll(2).",
        DEFAULT_PORT,
    )
    .switch("--quiet", "log only errors and the start and stop lines")
    .parse();
    let quiet = args.flag("--quiet");
    let addr = args
        .socket_addr()
        .unwrap_or_else(|message| exit_with_error(&message));

    let listener = listener::open(addr, 128, Accept::NonBlocking);
    // Ctrl-C and SIGTERM make this socket readable; poll watches it with the others.
    let wakeup = signal::shutdown_wakeup().unwrap_or_else(|message| exit_with_error(&message));
    log::listening(listener.local_addr().unwrap_or(addr));

    let mut server = EchoServer::new(listener, quiet);
    let reason = run(&mut server, &wakeup);
    server.shut_down(reason);
}

/// The event loop. Returns why it stopped.
fn run(server: &mut EchoServer, wakeup: &UnixStream) -> &'static str {
    // The kernel's answer for each connection, (readable, writable): one vector made
    // once and refilled every round, not one allocated per round.
    let mut ready: Vec<(bool, bool)> = Vec::new();
    loop {
        // ANCHOR: poll_call
        // One pollfd per descriptor: [wake-up, listener, connection 0, 1, ...].
        // poll(2) takes the whole list every call and the kernel scans all of it:
        // the cost grows with the number of connections, busy or idle.
        let accepting = server.accepting();
        let mut fds = Vec::with_capacity(2 + server.connections().len());
        fds.push(PollFd::new(wakeup.as_fd(), PollFlags::POLLIN));
        let listener_events = if accepting {
            PollFlags::POLLIN
        } else {
            PollFlags::empty()
        };
        fds.push(PollFd::new(server.listener().as_fd(), listener_events));
        for connection in server.connections() {
            let mut events = PollFlags::empty();
            if connection.wants_read() {
                events |= PollFlags::POLLIN;
            }
            if connection.wants_write() {
                events |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(connection.as_fd(), events));
        }
        // Wait without a timeout, unless accepting is paused and must resume.
        let timeout = server
            .accept_pause_left()
            .map_or(PollTimeout::NONE, poll_timeout_rounded_up);
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            // A signal interrupted the wait (EINTR): just wait again.
            Err(Errno::EINTR) => continue,
            Err(err) => {
                log!("{} poll failed: {err}", log::ERROR);
                return "poll failed";
            }
        }
        // What happened (`revents`), read out so that `fds` stops borrowing the
        // sockets. POLLERR and POLLHUP come whether asked for or not: the connection
        // failed or is closed both ways. A read or a write then returns at once, with
        // the error (e.g. ECONNRESET) or EOF, so they count as both readable and
        // writable.
        let revents = |fd: &PollFd| fd.revents().unwrap_or(PollFlags::empty());
        let woken = !revents(&fds[0]).is_empty();
        let can_accept = revents(&fds[1]).contains(PollFlags::POLLIN);
        let broken = PollFlags::POLLERR | PollFlags::POLLHUP;
        ready.clear();
        ready.extend(fds[2..].iter().map(|fd| {
            let events = revents(fd);
            (
                events.intersects(PollFlags::POLLIN | broken),
                events.intersects(PollFlags::POLLOUT | broken),
            )
        }));
        drop(fds);
        // ANCHOR_END: poll_call

        // ANCHOR: dispatch
        if woken {
            return "signal";
        }
        if can_accept {
            // Every queued connection: one readiness event may stand for many.
            while let Some(stream) = server.accept_next() {
                server.add(stream);
            }
        }
        server.handle(&ready);
        // ANCHOR_END: dispatch
    }
}

// ANCHOR: timeout
/// A poll timeout of `left`, rounded up to a whole millisecond (poll counts in
/// milliseconds). Rounded down, 0.9 ms left would be a timeout of 0: poll would
/// return at once, the accept pause would not be over, and the loop would spin until
/// it is.
fn poll_timeout_rounded_up(left: Duration) -> PollTimeout {
    PollTimeout::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(PollTimeout::MAX)
}
// ANCHOR_END: timeout
