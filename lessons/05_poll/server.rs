//! Lesson 05, the server: an echo server that serves many clients from one thread,
//! asking the kernel with poll(2) which sockets are ready.
//!
//!   terminal 1: cargo run --bin 05_poll_server
//!   terminal 2: cargo run --bin 05_poll_client -- --conns 3 hello
//!
//! It is lesson 04's server with poll instead of select: the same clients, each an
//! EchoConnection (src/echo_connection.rs), the same accept loop, and a loop that asks
//! with one array of pollfds instead of three bit sets, for any descriptor number.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use workbook::cli::Cli;
use workbook::echo_connection::{EchoConnection, READ_SIZE};
use workbook::listener::{self, Accept};
use workbook::{exit_with_error, log, show, signal};

const DEFAULT_PORT: u16 = 8009;
// ANCHOR: constants
/// After accept(2) fails for lack of descriptors (EMFILE/ENFILE), stop watching the
/// listener for this long (or until a connection closes): the pending connection
/// keeps the listener readable, and watching it would spin the loop.
const ACCEPT_PAUSE: Duration = Duration::from_millis(250);
// ANCHOR_END: constants

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

    let mut server = Server {
        listener,
        connections: Vec::new(),
        accept_paused_until: None,
        served: 0,
        quiet,
        read_buffer: vec![0; READ_SIZE],
    };
    let reason = server.run(&wakeup);
    // Dropping the connections closes them: close(2) on each socket.
    let open = server.connections.len();
    drop(server.connections);
    log::last_line(format!(
        "{} ({reason}): served {}, closed {} still open",
        log::SHUTTING_DOWN,
        show::count(server.served, "client"),
        show::count(open, "connection")
    ));
}

struct Server {
    listener: TcpListener,
    connections: Vec<EchoConnection>,
    /// Set after EMFILE: the listener is not watched until then.
    accept_paused_until: Option<Instant>,
    served: usize,
    quiet: bool,
    /// One read buffer for every connection: only one is read at a time.
    read_buffer: Vec<u8>,
}

impl Server {
    /// The event loop. Returns why it stopped.
    fn run(&mut self, wakeup: &UnixStream) -> &'static str {
        loop {
            // ANCHOR: poll_call
            // One pollfd per descriptor: [wake-up, listener, connection 0, 1, ...].
            // poll(2) takes the whole list every call and the kernel scans all of it:
            // the cost grows with the number of connections, busy or idle.
            let accepting = match self.accept_paused_until {
                Some(until) if Instant::now() < until => false,
                _ => {
                    self.accept_paused_until = None;
                    true
                }
            };
            let mut fds = Vec::with_capacity(2 + self.connections.len());
            fds.push(PollFd::new(wakeup.as_fd(), PollFlags::POLLIN));
            let listener_events = if accepting {
                PollFlags::POLLIN
            } else {
                PollFlags::empty()
            };
            fds.push(PollFd::new(self.listener.as_fd(), listener_events));
            for connection in &self.connections {
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
            let timeout = match self.accept_paused_until {
                Some(until) => time_left(until),
                None => PollTimeout::NONE,
            };
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                // A signal interrupted the wait (EINTR): just wait again.
                Err(Errno::EINTR) => continue,
                Err(err) => {
                    log!("{} poll failed: {err}", log::ERROR);
                    return "poll failed";
                }
            }
            // What happened, copied out so that `fds` stops borrowing the sockets.
            let ready: Vec<PollFlags> = fds
                .iter()
                .map(|fd| fd.revents().unwrap_or(PollFlags::empty()))
                .collect();
            drop(fds);
            // ANCHOR_END: poll_call

            // ANCHOR: dispatch
            if !ready[0].is_empty() {
                return "signal";
            }
            if ready[1].contains(PollFlags::POLLIN) {
                self.accept_all();
            }
            let mut any_closed = false;
            // POLLERR and POLLHUP come whether asked for or not: the connection failed
            // or is closed both ways. A read or a write then returns the error (e.g.
            // ECONNRESET) or EOF, so they count as both readable and writable.
            let broken = PollFlags::POLLERR | PollFlags::POLLHUP;
            for (connection, events) in self.connections.iter_mut().zip(&ready[2..]) {
                let readable = events.intersects(PollFlags::POLLIN | broken);
                let writable = events.intersects(PollFlags::POLLOUT | broken);
                if readable || writable {
                    connection.handle(readable, writable, &mut self.read_buffer, self.quiet);
                }
                any_closed |= connection.is_closed();
            }
            if any_closed {
                // Dropping a connection closes its socket.
                self.connections
                    .retain(|connection| !connection.is_closed());
                // A descriptor was freed: if accept was paused for EMFILE, retry now.
                self.accept_paused_until = None;
            }
            // ANCHOR_END: dispatch
        }
    }

    // ANCHOR: accept_all
    /// Accepts every queued connection: one readiness event may stand for many.
    /// (Lesson 04's, without the FD_SETSIZE check: poll watches any descriptor.)
    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => self.add(stream),
                // The queue is empty: back to poll.
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                // Out of descriptors, for this process (EMFILE) or the system (ENFILE).
                // The connection stays queued in the kernel; stop watching the listener
                // for a while instead of spinning on it.
                Err(err) if out_of_descriptors(&err) => {
                    log!(
                        "{} accept: {err}; pausing accept for {} ms ({} open)",
                        log::ERROR,
                        ACCEPT_PAUSE.as_millis(),
                        show::count(self.connections.len(), "connection")
                    );
                    self.accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                    return;
                }
                // ECONNABORTED and the like: that one client is gone; try the next.
                Err(err) => log!("{} accept: {err}", log::ERROR),
            }
        }
    }

    /// A new client: non-blocking from now on, logged, and watched from the next round.
    fn add(&mut self, stream: TcpStream) {
        match EchoConnection::new(stream) {
            Ok(connection) => {
                self.served += 1;
                if !self.quiet {
                    log!(
                        "{} {} ({} open)",
                        log::CONNECTED,
                        connection.peers(),
                        show::count(self.connections.len() + 1, "connection")
                    );
                }
                self.connections.push(connection);
            }
            Err(err) => log!(
                "{} cannot make a connection non-blocking: {err}",
                log::ERROR
            ),
        }
    }
    // ANCHOR_END: accept_all
}

/// accept(2) failed with EMFILE (this process has all the descriptors it may have)
/// or ENFILE (the whole system has).
fn out_of_descriptors(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error().map(Errno::from_raw),
        Some(Errno::EMFILE | Errno::ENFILE)
    )
}

// ANCHOR: time_left
/// The time until `until` as a poll timeout, rounded up to a whole millisecond (poll
/// counts in milliseconds): rounded down, the wait would end before the pause, and
/// the loop would call poll again and again, with a timeout of 0, until it is over.
fn time_left(until: Instant) -> PollTimeout {
    let left = until.saturating_duration_since(Instant::now());
    PollTimeout::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(PollTimeout::MAX)
}
// ANCHOR_END: time_left
