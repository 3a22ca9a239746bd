//! Lesson 04, the server: an echo server that serves many clients from one thread,
//! asking the kernel with select(2) which sockets are ready.
//!
//!   terminal 1: cargo run --bin 04_select_server
//!   terminal 2: cargo run --bin 04_select_client -- --conns 3 hello
//!
//! select(2) is the oldest readiness call: the sockets to watch are bits in fixed-size
//! sets, and descriptor numbers from FD_SETSIZE (1024) up cannot be watched at all.
//! What one client needs (its non-blocking socket, its output buffer, reading and
//! echoing) is in src/echo_connection.rs; this file is the loop around it. Lesson 05
//! is the same server built on poll(2), which has no such limit.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::select::{FD_SETSIZE, FdSet, select};
use nix::sys::time::{TimeVal, TimeValLike};
use workbook::cli::Cli;
use workbook::echo_connection::{EchoConnection, READ_SIZE};
use workbook::listener::{self, Accept};
use workbook::{exit_with_error, log, show, signal};

const DEFAULT_PORT: u16 = 10001;
// ANCHOR: constants
/// After accept(2) fails for lack of descriptors (EMFILE/ENFILE), stop watching the
/// listener for this long (or until a connection closes): the pending connection
/// keeps the listener readable, and watching it would spin the loop.
const ACCEPT_PAUSE: Duration = Duration::from_millis(250);
// ANCHOR_END: constants

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

/// Can select watch this descriptor? An fd_set is a fixed array of FD_SETSIZE bits,
/// one per descriptor number; there is no bit for 1024 or above. (nix's FdSet::insert
/// panics for such a descriptor; C's FD_SET would write past the end of the array.)
fn fits_in_fd_set(fd: RawFd) -> bool {
    usize::try_from(fd).is_ok_and(|fd| fd < FD_SETSIZE)
}

struct Server {
    listener: TcpListener,
    /// Every connection here has a descriptor below FD_SETSIZE (accept_all sees to it).
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
            // ANCHOR: select_call
            // The sets are built anew every round: select(2) overwrites them with its
            // answer (a bit stays set only if that descriptor is ready), so last
            // round's sets hold last round's answer, not our questions.
            let accepting = match self.accept_paused_until {
                Some(until) if Instant::now() < until => false,
                _ => {
                    self.accept_paused_until = None;
                    true
                }
            };
            let mut read_set = FdSet::new();
            let mut write_set = FdSet::new();
            // nfds is the highest descriptor in any set, plus one: the kernel looks at
            // bits 0 to nfds-1 of each set, and ignores the rest.
            let mut highest = wakeup.as_raw_fd();
            read_set.insert(wakeup.as_fd());
            if accepting {
                read_set.insert(self.listener.as_fd());
                highest = highest.max(self.listener.as_raw_fd());
            }
            for connection in &self.connections {
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
            let mut timeout = self.accept_paused_until.map(time_left);
            // The except set (the fourth argument) is for TCP urgent data, which
            // this server does not use: None. Errors and EOF show up as readable.
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
            // The answer, read out of the sets so that they stop borrowing the
            // sockets: `ready[i]` is (readable, writable) for connection i.
            let woken = read_set.contains(wakeup.as_fd());
            let can_accept = accepting && read_set.contains(self.listener.as_fd());
            let ready: Vec<(bool, bool)> = self
                .connections
                .iter()
                .map(|connection| {
                    let fd = connection.as_fd();
                    (read_set.contains(fd), write_set.contains(fd))
                })
                .collect();
            // ANCHOR_END: select_call

            // ANCHOR: dispatch
            if woken {
                return "signal";
            }
            if can_accept {
                self.accept_all();
            }
            let mut any_closed = false;
            // accept_all appended new connections after the ones select knew about;
            // zip stops at the end of `ready`, so they wait for the next round.
            for (connection, &(readable, writable)) in self.connections.iter_mut().zip(&ready) {
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
    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    // The kernel gives the lowest free descriptor number. At 1024 or
                    // above, select cannot watch it (and FdSet::insert would panic):
                    // close it at once, so the client sees the connection end instead
                    // of hanging, and its descriptor is free again.
                    let fd = stream.as_raw_fd();
                    if !fits_in_fd_set(fd) {
                        log!(
                            "refused {}: descriptor {fd} is not below FD_SETSIZE \
                             ({FD_SETSIZE}), select cannot watch it",
                            show::peers(&stream)
                        );
                        continue;
                    }
                    self.add(stream);
                }
                // The queue is empty: back to select.
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

/// The time until `until` as a select timeout, rounded up to a whole microsecond: a
/// timeout that ends even a little early finds the pause not yet over, and the loop
/// would call select again and again until it is.
fn time_left(until: Instant) -> TimeVal {
    let left = until.saturating_duration_since(Instant::now());
    // At most ACCEPT_PAUSE, so the count fits easily.
    let micros = left.as_nanos().div_ceil(1_000);
    TimeVal::microseconds(micros as i64)
}
