//! Lesson 04, the server: an echo server that serves many clients from one thread,
//! asking the kernel with select(2) which sockets are ready.
//!
//!   terminal 1: cargo run --bin 04_select_server
//!   terminal 2: cargo run --bin 04_select_client -- --conns 3 hello
//!
//! select(2) is the oldest readiness call: the sockets to watch are bits in fixed-size
//! sets, and descriptor numbers from FD_SETSIZE (1024) up cannot be watched at all.
//! This file is the select loop; what it serves (each client's non-blocking socket
//! and output buffer, accepting, reading and echoing) is src/echo_connection.rs.
//! Lesson 05 is the same server with a poll(2) loop, which has no such limit.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::select::{FD_SETSIZE, FdSet, select};
use nix::sys::time::{TimeVal, TimeValLike};
use workbook::cli::Cli;
use workbook::echo_connection::{EchoServer, REFUSED};
use workbook::listener::{self, Accept};
use workbook::{exit_with_error, log, show, signal};

const DEFAULT_PORT: u16 = 10001;

fn main() {
    let args = Cli::new(
        "04_select_server",
        "Lesson 04: an echo server that serves many clients from one thread with select(2).",
        DEFAULT_PORT,
    )
    .switch("--quiet", "log only errors and the start and stop lines")
    .parse();
    let quiet = args.flag("--quiet");
    let addr = args
        .socket_addr()
        .unwrap_or_else(|message| exit_with_error(&message));

    // ANCHOR: low_descriptors
    // The listener and the wake-up socket are opened first, so that they get the
    // lowest free descriptor numbers (3, then 4 and 5 for the wake-up pair, when
    // started from a shell): select can only watch descriptors below FD_SETSIZE,
    // and these two must always be watched.
    let listener = listener::open(addr, 128, Accept::NonBlocking);
    // Ctrl-C and SIGTERM make this socket readable; select watches it with the others.
    let wakeup = signal::shutdown_wakeup().unwrap_or_else(|message| exit_with_error(&message));
    for fd in [listener.as_raw_fd(), wakeup.as_raw_fd()] {
        if !fits_in_fd_set(fd) {
            exit_with_error(&format!(
                "descriptor {fd} is not below FD_SETSIZE ({FD_SETSIZE}): select cannot \
                 watch it; too many descriptors were already open when the server started"
            ));
        }
    }
    // ANCHOR_END: low_descriptors
    log::listening(listener.local_addr().unwrap_or(addr));

    let mut server = EchoServer::new(listener, quiet);
    let reason = run(&mut server, &wakeup);
    server.shut_down(reason);
}

/// Can select watch this descriptor? An fd_set is a fixed array of FD_SETSIZE bits,
/// one per descriptor number; there is no bit for 1024 or above. (nix's FdSet::insert
/// panics for such a descriptor; C's FD_SET would write past the end of the array.)
fn fits_in_fd_set(fd: RawFd) -> bool {
    usize::try_from(fd).is_ok_and(|fd| fd < FD_SETSIZE)
}

/// The event loop. Returns why it stopped.
fn run(server: &mut EchoServer, wakeup: &UnixStream) -> &'static str {
    // The kernel's answer for each connection, (readable, writable): one vector made
    // once and refilled every round, not one allocated per round.
    let mut ready: Vec<(bool, bool)> = Vec::new();
    loop {
        // ANCHOR: select_call
        // The sets are built anew every round: select(2) overwrites them with its
        // answer (a bit stays set only if that descriptor is ready), so last round's
        // sets hold last round's answer, not our questions.
        let accepting = server.accepting();
        let mut read_set = FdSet::new();
        let mut write_set = FdSet::new();
        // nfds is the highest descriptor in any set, plus one: the kernel looks at
        // bits 0 to nfds-1 of each set, and ignores the rest.
        let mut highest = wakeup.as_raw_fd();
        read_set.insert(wakeup.as_fd());
        if accepting {
            read_set.insert(server.listener().as_fd());
            highest = highest.max(server.listener().as_raw_fd());
        }
        for connection in server.connections() {
            // Below FD_SETSIZE, checked when it was accepted: insert cannot panic.
            if connection.wants_read() {
                read_set.insert(connection.as_fd());
            }
            if connection.wants_write() {
                write_set.insert(connection.as_fd());
            }
            highest = highest.max(connection.as_fd().as_raw_fd());
        }
        // No timeout (None): wait as long as it takes. Only while accepting is
        // paused is there a deadline, as a struct timeval (seconds, microseconds).
        let mut timeout = server.accept_pause_left().map(timeval_rounded_up);
        // The except set (the fourth argument) is for TCP urgent data, which this
        // server does not use: None. Errors and EOF show up as readable.
        match select(
            highest + 1,
            &mut read_set,
            &mut write_set,
            None,
            timeout.as_mut(),
        ) {
            Ok(_) => {}
            // A signal interrupted the wait (EINTR): just wait again.
            Err(Errno::EINTR) => continue,
            Err(err) => {
                log!("{} select failed: {err}", log::ERROR);
                return "select failed";
            }
        }
        // The answer, read out of the sets so that they stop borrowing the sockets:
        // `ready[i]` is (readable, writable) for connection i.
        let woken = read_set.contains(wakeup.as_fd());
        let can_accept = accepting && read_set.contains(server.listener().as_fd());
        ready.clear();
        ready.extend(server.connections().iter().map(|connection| {
            let fd = connection.as_fd();
            (read_set.contains(fd), write_set.contains(fd))
        }));
        // ANCHOR_END: select_call

        // ANCHOR: dispatch
        if woken {
            return "signal";
        }
        if can_accept {
            accept_all(server);
        }
        server.handle(&ready);
        // ANCHOR_END: dispatch
    }
}

// ANCHOR: accept_all
/// Accepts every queued connection that select can watch.
fn accept_all(server: &mut EchoServer) {
    while let Some(stream) = server.accept_next() {
        // The kernel gives the lowest free descriptor number. At 1024 or above,
        // select cannot watch it (and FdSet::insert would panic): close it at once,
        // so the client sees the connection end instead of hanging, and its
        // descriptor is free again.
        let fd = stream.as_raw_fd();
        if !fits_in_fd_set(fd) {
            log!(
                "{REFUSED} {}: descriptor {fd} is not below FD_SETSIZE ({FD_SETSIZE}), \
                 select cannot watch it",
                show::peers(&stream)
            );
            continue;
        }
        server.add(stream);
    }
}
// ANCHOR_END: accept_all

// ANCHOR: timeout
/// A select timeout of `left`, rounded up to a whole microsecond: a wait that ends
/// even a little before the accept pause does finds it not over yet, and the loop
/// would call select again and again until it is.
fn timeval_rounded_up(left: Duration) -> TimeVal {
    // At most ACCEPT_PAUSE (250 ms): the count fits in an i64 with room to spare.
    let micros = left.as_nanos().div_ceil(1_000);
    TimeVal::microseconds(micros as i64)
}
// ANCHOR_END: timeout
