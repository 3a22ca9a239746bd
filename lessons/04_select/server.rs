//! Lesson 04, the server: an echo server that serves many clients from one thread,
//! asking the kernel with select(2) which sockets are ready.
//!
//!   terminal 1: cargo run --bin 04_select_server
//!   terminal 2: cargo run --bin 04_select_client -- --conns 3 hello
//!
//! select(2) is the oldest readiness call: the sockets to watch are bits in fixed-size
//! sets, and descriptor numbers from FD_SETSIZE (1024) up cannot be watched at all.
//! Lesson 05 is the same server built on poll(2), which has no such limit.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::select::{FD_SETSIZE, FdSet, select};
use nix::sys::time::TimeVal;
use socket2::{Domain, Protocol, Socket, Type};
use workbook::cli::Cli;
use workbook::{bind_failed, exit_with_error, show, signal};

const DEFAULT_PORT: u16 = 10001;
// ANCHOR: constants
/// Bytes one read(2) may take from one connection per wake-up. Reading at most this
/// much before moving on keeps one busy client from starving the others.
const READ_SIZE: usize = 64 * 1024;
/// When a connection has this much echo waiting to go out (its client sends but does
/// not read), we stop reading from it until it drains: the client's own TCP window
/// then fills and the kernel makes it wait. Memory per client stays bounded.
const OUTPUT_CAP: usize = 1024 * 1024;
/// After accept(2) fails for lack of descriptors (EMFILE/ENFILE), stop watching the
/// listener for this long (or until a connection closes): the pending connection
/// keeps the listener readable, and watching it would spin the loop.
const ACCEPT_PAUSE: Duration = Duration::from_millis(250);
// ANCHOR_END: constants

// ANCHOR: connection
/// One client: its socket, and the echo not yet written to it.
struct Connection {
    stream: TcpStream,
    peers: String,
    /// Bytes received and not yet sent back; `output[sent..]` is what is left.
    output: Vec<u8>,
    sent: usize,
    /// The client half-closed (read returned 0): finish sending, then close.
    read_closed: bool,
    /// The output reached OUTPUT_CAP and reading stopped (logged when it changes).
    output_full: bool,
    /// Set when the connection is done; it is removed after this round.
    closed: bool,
}
// ANCHOR_END: connection

impl Connection {
    fn pending(&self) -> usize {
        self.output.len() - self.sent
    }

    // ANCHOR: interest
    /// Whether to put this connection in the read set: only while its output has room
    /// (the backpressure), and not after the client's half-close (a read would only
    /// say EOF again, at once, forever).
    fn wants_read(&self) -> bool {
        !self.read_closed && self.pending() < OUTPUT_CAP
    }

    /// Whether to put it in the write set: only while there is output. A socket is
    /// almost always writable, and asking anyway would wake the loop for nothing.
    fn wants_write(&self) -> bool {
        self.pending() > 0
    }
    // ANCHOR_END: interest
}

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
    let listener = open_listener(addr);
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
    let bound = listener.local_addr().unwrap_or(addr);
    println!("listening on {bound}");

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
    println!(
        "shutting down ({reason}): served {}, closed {} still open",
        show::count(server.served, "client"),
        show::count(open, "connection")
    );
}

/// Can select watch this descriptor? An fd_set is a fixed array of FD_SETSIZE bits,
/// one per descriptor number; there is no bit for 1024 or above. (nix's FdSet::insert
/// panics for such a descriptor; C's FD_SET would write past the end of the array.)
fn fits_in_fd_set(fd: RawFd) -> bool {
    usize::try_from(fd).is_ok_and(|fd| fd < FD_SETSIZE)
}

/// socket, SO_REUSEADDR, bind, listen (lesson 01), then O_NONBLOCK.
fn open_listener(addr: SocketAddr) -> TcpListener {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .unwrap_or_else(|err| exit_with_error(&format!("cannot create a TCP socket: {err}")));
    if let Err(err) = socket.set_reuse_address(true) {
        exit_with_error(&format!("cannot set SO_REUSEADDR: {err}"));
    }
    if let Err(err) = socket.bind(&addr.into()) {
        exit_with_error(&bind_failed(addr, &err));
    }
    if let Err(err) = socket.listen(128) {
        exit_with_error(&format!("cannot listen on {addr}: {err}"));
    }
    // ANCHOR: nonblocking_listener
    // Non-blocking: select says the listener is readable when a connection is queued,
    // but the client may reset it before we accept; a blocking accept would then
    // wait for the next client and freeze every other connection meanwhile.
    if let Err(err) = socket.set_nonblocking(true) {
        exit_with_error(&format!("cannot make the listener non-blocking: {err}"));
    }
    // ANCHOR_END: nonblocking_listener
    TcpListener::from(socket)
}

struct Server {
    listener: TcpListener,
    /// Every connection here has a descriptor below FD_SETSIZE (accept_all sees to it).
    connections: Vec<Connection>,
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
                let fd = connection.stream.as_fd();
                if connection.wants_read() {
                    read_set.insert(fd);
                }
                if connection.wants_write() {
                    write_set.insert(fd);
                }
                highest = highest.max(fd.as_raw_fd());
            }
            // No timeout (None): wait as long as it takes. Only while accepting is
            // paused is there a deadline, as a struct timeval (seconds, microseconds).
            let mut timeout = self.accept_paused_until.map(|until| {
                // At most ACCEPT_PAUSE: whole seconds, then microseconds (< 1,000,000).
                let left = until.saturating_duration_since(Instant::now());
                TimeVal::new(
                    left.as_secs() as libc::time_t,
                    left.subsec_micros() as libc::suseconds_t,
                )
            });
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
                    eprintln!("error: select failed: {err}");
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
                    let fd = connection.stream.as_fd();
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
                    handle(
                        connection,
                        readable,
                        writable,
                        &mut self.read_buffer,
                        self.quiet,
                    );
                }
                any_closed |= connection.closed;
            }
            if any_closed {
                // Dropping a Connection closes its socket.
                self.connections.retain(|connection| !connection.closed);
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
                        println!(
                            "refused {}: descriptor {fd} is not below FD_SETSIZE \
                             ({FD_SETSIZE}), select cannot watch it",
                            show::peers(&stream)
                        );
                        drop(stream);
                        continue;
                    }
                    // Accepted sockets do not inherit O_NONBLOCK on Linux: set it, so
                    // that no read or write can ever block the loop.
                    if let Err(err) = stream.set_nonblocking(true) {
                        println!("error: cannot make a connection non-blocking: {err}");
                        continue;
                    }
                    let peers = show::peers(&stream);
                    self.served += 1;
                    if !self.quiet {
                        println!(
                            "connected {peers} ({} open)",
                            show::count(self.connections.len() + 1, "connection")
                        );
                    }
                    self.connections.push(Connection {
                        stream,
                        peers,
                        output: Vec::new(),
                        sent: 0,
                        read_closed: false,
                        output_full: false,
                        closed: false,
                    });
                }
                // The queue is empty: back to select.
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                // Out of descriptors, for this process (EMFILE) or the system (ENFILE).
                // The connection stays queued in the kernel; stop watching the listener
                // for a while instead of spinning on it.
                Err(err)
                    if matches!(err.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) =>
                {
                    println!(
                        "error: accept: {err}; pausing accept for {} ms ({} open)",
                        ACCEPT_PAUSE.as_millis(),
                        show::count(self.connections.len(), "connection")
                    );
                    self.accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                    return;
                }
                // ECONNABORTED and the like: that one client is gone; try the next.
                Err(err) => println!("error: accept: {err}"),
            }
        }
    }
    // ANCHOR_END: accept_all
}

// ANCHOR: handle
/// Does what select said this connection is ready for. Readable covers data, EOF
/// and a pending error (a read returns it); writable covers room and a pending error.
fn handle(
    connection: &mut Connection,
    readable: bool,
    writable: bool,
    read_buffer: &mut [u8],
    quiet: bool,
) {
    if readable {
        read_some(connection, read_buffer, quiet);
    }
    if writable && !connection.closed && connection.pending() > 0 {
        write_some(connection);
    }
    let full = connection.pending() >= OUTPUT_CAP;
    if full != connection.output_full && !connection.closed {
        connection.output_full = full;
        let change = if full {
            "output buffer full (OUTPUT_CAP), not reading until the client reads"
        } else {
            "output buffer drained, reading again"
        };
        if !quiet {
            println!("{}: {change}", connection.peers);
        }
    }
    if !connection.closed && connection.read_closed && connection.pending() == 0 {
        // The client half-closed and has all its echo: close our side too.
        if !quiet {
            println!("disconnected {}", connection.peers);
        }
        connection.closed = true;
    }
}
// ANCHOR_END: handle

// ANCHOR: read_some
fn read_some(connection: &mut Connection, buffer: &mut [u8], quiet: bool) {
    // Not more than the output cap allows, so that memory stays bounded.
    let room = (OUTPUT_CAP - connection.pending().min(OUTPUT_CAP)).clamp(1, buffer.len());
    match connection.stream.read(&mut buffer[..room]) {
        Ok(0) => connection.read_closed = true,
        Ok(n) => {
            let received = &buffer[..n];
            if !quiet {
                println!(
                    "received {} from {}: {}",
                    show::count(n, "byte"),
                    connection.peers,
                    show::bytes(received)
                );
            }
            // Nothing waiting to go out before it: send the echo at once, straight
            // from this buffer. Usually the kernel takes it all, and nothing is
            // copied or queued; only what does not fit waits in `output`.
            let mut sent_now = 0;
            if connection.pending() == 0 {
                connection.output.clear();
                connection.sent = 0;
                match connection.stream.write(received) {
                    Ok(written) => sent_now = written,
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => {
                        println!("disconnected {}: {err}", connection.peers);
                        connection.closed = true;
                        return;
                    }
                }
            }
            connection.output.extend_from_slice(&received[sent_now..]);
        }
        // Readiness was stale (or the data went to another reader): nothing to do.
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
        Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
        // ECONNRESET and friends: this client is gone; the server goes on.
        Err(err) => {
            println!("disconnected {}: {err}", connection.peers);
            connection.closed = true;
        }
    }
}
// ANCHOR_END: read_some

// ANCHOR: write_some
fn write_some(connection: &mut Connection) {
    // write(2) on a non-blocking socket takes what fits in the kernel's send buffer,
    // maybe only part: the rest stays in `output` until select says writable again.
    match connection
        .stream
        .write(&connection.output[connection.sent..])
    {
        Ok(n) => {
            connection.sent += n;
            if connection.sent == connection.output.len() {
                connection.output.clear();
                connection.sent = 0;
            } else if connection.sent > OUTPUT_CAP {
                // Drop the part already sent, so the buffer does not grow forever.
                connection.output.drain(..connection.sent);
                connection.sent = 0;
            }
        }
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
        Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
        // EPIPE or ECONNRESET: the client is gone. Rust programs ignore SIGPIPE, so
        // this is an error value here, not the death of the process.
        Err(err) => {
            println!("disconnected {}: {err}", connection.peers);
            connection.closed = true;
        }
    }
}
// ANCHOR_END: write_some
