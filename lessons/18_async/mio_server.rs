//! `18_async_server --reactor mio`: the echo on mio, the crate tokio's reactor is
//! built on. mio is lesson 08's reactor in library form: a `Poll` (an epoll
//! instance), `Token`s (epoll_event's data), `register`/`reregister` (epoll_ctl) and
//! `poll` (epoll_wait). There are no futures here and no tasks: one loop, one
//! thread, a handler per connection, as in lesson 08. mio registers every socket
//! edge-triggered (EPOLLET), so each connection reads until WouldBlock.

use std::collections::HashMap;
use std::io::{self, Read};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use workbook::log::RateLimitedLog;
use workbook::output::OutputBuffer;
use workbook::{exit_with_error, log, show, signal};

/// The listening socket's token, and the signal waker's.
const LISTENER: Token = Token(0);
const SHUTDOWN: Token = Token(1);
/// Connections get tokens from here up.
const FIRST_CONNECTION: usize = 2;
/// The most one read(2) takes (one buffer for every connection: one loop, one thread).
const READ_SIZE: usize = 64 * 1024;
/// Echo waiting to go out beyond which a connection is not read (as in lesson 08).
const OUTPUT_CAP: usize = 1024 * 1024;
/// How long accepting pauses after EMFILE/ENFILE (as in lesson 08).
const ACCEPT_PAUSE: Duration = Duration::from_millis(250);
const ACCEPT_ERROR_INTERVAL: Duration = Duration::from_secs(1);

// ANCHOR: connection
/// One client: its socket and the echo not sent yet.
struct Connection {
    stream: TcpStream,
    peers: String,
    output: OutputBuffer,
    /// The client half-closed: finish the echo, then close.
    read_closed: bool,
    /// An event said the client's FIN (or an error) has come: read until read(2)
    /// says so, as no edge will come for it again.
    peer_closed_seen: bool,
    /// An event said TCP urgent data (MSG_OOB, EPOLLPRI) came: a read stops short
    /// at its mark with more queued behind it, so from now on a short read proves
    /// nothing and the pump reads until WouldBlock. Kept for good: it is rare
    /// (telnet's and ftp's aborts) and costs one read per turn.
    urgent_seen: bool,
}
// ANCHOR_END: connection

// ANCHOR: run
pub fn run(listener: std::net::TcpListener, quiet: bool) {
    let fail = |what: &str, err: io::Error| -> ! { exit_with_error(&format!("{what}: {err}")) };
    // epoll_create1(2).
    let mut poll = Poll::new().unwrap_or_else(|err| fail("cannot create an epoll instance", err));
    let bound = listener.local_addr();
    let mut listener = TcpListener::from_std(listener);
    // epoll_ctl(EPOLL_CTL_ADD) with EPOLLIN | EPOLLET, and the token as its data.
    let registry = poll.registry();
    if let Err(err) = registry.register(&mut listener, LISTENER, Interest::READABLE) {
        fail("cannot watch the listening socket", err);
    }
    // An eventfd in the same epoll set: the signal thread writes to it (no log, no
    // lock), and the loop wakes with the SHUTDOWN token.
    let waker = Waker::new(registry, SHUTDOWN)
        .unwrap_or_else(|err| fail("cannot create the shutdown waker", err));
    signal::on_shutdown(move || {
        let _ = waker.wake();
    })
    .unwrap_or_else(|message| exit_with_error(&message));
    if let Ok(bound) = bound {
        log::listening(bound);
    }
    if !quiet {
        log!("event loop: mio (epoll, edge-triggered)");
    }

    let mut connections: HashMap<Token, Connection> = HashMap::new();
    let mut events = Events::with_capacity(1024);
    let mut buffer = vec![0u8; READ_SIZE];
    let mut next_token = FIRST_CONNECTION;
    let mut served = 0usize;
    let mut accept_paused_until: Option<Instant> = None;
    let accept_errors = RateLimitedLog::new(ACCEPT_ERROR_INTERVAL);
    // Connections to pump again without an event, and the ones queued this round.
    let mut still_ready: Vec<Token> = Vec::new();
    let mut busy: Vec<Token> = Vec::new();
    let stopped = loop {
        // epoll_wait(2): with no timeout unless accepting is paused.
        // Zero while a connection still has work queued (see still_ready).
        let timeout = if still_ready.is_empty() {
            accept_paused_until.map(|until| until.saturating_duration_since(Instant::now()))
        } else {
            Some(Duration::ZERO)
        };
        if let Err(err) = poll.poll(&mut events, timeout) {
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break format!("epoll_wait failed: {err}");
        }
        if let Some(until) = accept_paused_until
            && Instant::now() >= until
        {
            // Watch the listener again: re-registering reports the connections
            // that queued up meanwhile.
            accept_paused_until = None;
            if let Err(err) = poll
                .registry()
                .register(&mut listener, LISTENER, Interest::READABLE)
            {
                break format!("cannot watch the listening socket again: {err}");
            }
        }
        let mut stop = false;
        for event in events.iter() {
            match event.token() {
                SHUTDOWN => stop = true,
                LISTENER => {
                    let accepted =
                        accept_all(&listener, &poll, &mut connections, &mut next_token, quiet);
                    served += accepted.count;
                    if let Some(err) = accepted.error {
                        accept_errors.line(format!(
                            "{} accept: {err}; pausing accept for {} ms",
                            log::ERROR,
                            ACCEPT_PAUSE.as_millis()
                        ));
                        // Stop watching the listener until the pause is over.
                        let _ = poll.registry().deregister(&mut listener);
                        accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                    }
                }
                token => {
                    if let Some(connection) = connections.get_mut(&token) {
                        if event.is_read_closed() || event.is_error() {
                            connection.peer_closed_seen = true;
                        }
                        if event.is_priority() {
                            connection.urgent_seen = true;
                        }
                    }
                    pump_one(&mut connections, token, &mut buffer, quiet, &mut busy)
                }
            }
        }
        // Connections whose pump stopped at MAX_ROUNDS with more to do: no edge
        // comes for them again, so they get another turn here, after the others'
        // events and the waker's (the next epoll_wait does not block meanwhile).
        for token in std::mem::take(&mut still_ready) {
            pump_one(&mut connections, token, &mut buffer, quiet, &mut busy);
        }
        std::mem::swap(&mut still_ready, &mut busy);
        if stop {
            break "signal".to_string();
        }
    };
    let open = connections.len();
    // Closes every connection.
    drop(connections);
    log::last_line(format!(
        "{} ({stopped}): served {}, closed {} still open",
        log::SHUTTING_DOWN,
        show::count(served, "client"),
        show::count(open, "connection")
    ));
}
// ANCHOR_END: run

/// One turn of a connection's pump; drops it when done or failed, queues it in
/// `busy` when it stopped with more to do.
fn pump_one(
    connections: &mut HashMap<Token, Connection>,
    token: Token,
    buffer: &mut [u8],
    quiet: bool,
    busy: &mut Vec<Token>,
) {
    let Some(connection) = connections.get_mut(&token) else {
        return;
    };
    match connection.pump(buffer, quiet) {
        Ok(Pumped::Waiting) => {}
        Ok(Pumped::Busy) => {
            if !busy.contains(&token) {
                busy.push(token);
            }
        }
        Ok(Pumped::Done) => {
            // Dropping the mio TcpStream closes it, which also
            // takes it out of the epoll set.
            if let Some(done) = connections.remove(&token)
                && !quiet
            {
                log!("{} {}", log::DISCONNECTED, done.peers);
            }
        }
        Err(err) => {
            if let Some(failed) = connections.remove(&token) {
                log!("{} {}: {err}", log::DISCONNECTED, failed.peers);
            }
        }
    }
}

/// What one pump left behind.
enum Pumped {
    /// Waiting for the kernel's next edge.
    Waiting,
    /// MAX_ROUNDS done and neither side blocked: pump it again soon.
    Busy,
    /// The client is gone and everything is echoed.
    Done,
}

/// Read-then-write rounds per turn, each of one read (READ_SIZE at most): a turn
/// moves at most 1 MiB. One client sending and reading at full speed would
/// otherwise keep the loop to itself (and the shutdown waker waiting); with rounds
/// that read until OUTPUT_CAP, 16 rounds were 16 MiB, and the other clients waited
/// about 100 ms per turn.
const MAX_ROUNDS: usize = 16;

struct Accepted {
    count: usize,
    /// An error the next accept would meet again (EMFILE): pause.
    error: Option<io::Error>,
}

// ANCHOR: accept
/// accept(2) until WouldBlock: edge-triggered, one event may stand for many.
fn accept_all(
    listener: &TcpListener,
    poll: &Poll,
    connections: &mut HashMap<Token, Connection>,
    next_token: &mut usize,
    quiet: bool,
) -> Accepted {
    let mut count = 0;
    loop {
        let (mut stream, _) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                return Accepted { count, error: None };
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) if err.kind() == io::ErrorKind::ConnectionAborted => continue,
            Err(err) => {
                return Accepted {
                    count,
                    error: Some(err),
                };
            }
        };
        count += 1;
        let peers = show::peers(&stream);
        let token = Token(*next_token);
        *next_token += 1;
        // Readable and writable, edge-triggered, once: a writable edge comes only
        // when a full send buffer drains, so asking for it costs nothing meanwhile.
        // And priority (EPOLLPRI): it tells of urgent data, after which a short read
        // no longer means the socket is drained (see `pump`).
        let interest = Interest::READABLE | Interest::WRITABLE | Interest::PRIORITY;
        if let Err(err) = poll.registry().register(&mut stream, token, interest) {
            log!("{} {peers}: cannot watch it: {err}", log::ERROR);
            continue;
        }
        if !quiet {
            log!("{} {peers}", log::CONNECTED);
        }
        let connection = Connection {
            stream,
            peers,
            output: OutputBuffer::new(OUTPUT_CAP),
            read_closed: false,
            peer_closed_seen: false,
            urgent_seen: false,
        };
        connections.insert(token, connection);
    }
}
// ANCHOR_END: accept

impl Connection {
    // ANCHOR: pump
    /// Reads and writes until the kernel says WouldBlock, or a short read says the
    /// socket is drained (edge-triggered: no event comes again for what is already
    /// there; not after the FIN or urgent data), or OUTPUT_CAP stops the reading.
    /// At most MAX_ROUNDS rounds of one read each, so the other connections get
    /// their turn.
    fn pump(&mut self, buffer: &mut [u8], quiet: bool) -> io::Result<Pumped> {
        for _ in 0..MAX_ROUNDS {
            let mut read_blocked = false;
            while !self.read_closed && !self.output.is_full() {
                let room = self.output.room().min(buffer.len());
                match self.stream.read(&mut buffer[..room]) {
                    Ok(0) => self.read_closed = true,
                    Ok(n) => {
                        if !quiet {
                            let data = show::bytes(&buffer[..n]);
                            let size = show::count(n, "byte");
                            log!("{} {size} from {}: {data}", log::RECEIVED, self.peers);
                        }
                        self.output.push(&buffer[..n]);
                        // A short read took all there was (Linux): no read to meet
                        // EAGAIN, the next data brings a new edge (tokio does the
                        // same). Two exceptions: the FIN came already (it brings
                        // no edge again), or urgent data came (Linux stops a read
                        // short at its mark, with more data behind it).
                        // One read per round: a round moves at most READ_SIZE.
                        read_blocked = n < room && !self.peer_closed_seen && !self.urgent_seen;
                        break;
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                        read_blocked = true;
                        break;
                    }
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => return Err(err),
                }
            }
            let mut write_blocked = false;
            while !self.output.is_empty() {
                match self.output.write_to(&self.stream) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(_) => {}
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                        write_blocked = true;
                        break;
                    }
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => return Err(err),
                }
            }
            // Either side waits for the kernel (the next edge), or the client is
            // done. Otherwise both went through, and there may be more: another round.
            if read_blocked || write_blocked || self.read_closed {
                if self.read_closed && self.output.is_empty() {
                    return Ok(Pumped::Done);
                }
                return Ok(Pumped::Waiting);
            }
        }
        Ok(Pumped::Busy)
    }
    // ANCHOR_END: pump
}
