//! Lesson 19, the server: lesson 08's echo server rebuilt on io_uring(7). Instead of
//! asking the kernel which sockets are ready (epoll) and then calling accept, read
//! and write itself, it puts whole operations in a submission queue (accept, receive,
//! send) and reads their results from a completion queue, many per io_uring_enter(2).
//!
//!   terminal 1: cargo run --bin 19_uring_server
//!   terminal 2: cargo run --bin 19_uring_client -- --conns 3 hello
//!
//! It needs Linux 6.1 or later with io_uring allowed (see the chapter's limits).

mod buffer_ring;

use std::collections::VecDeque;
use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use buffer_ring::BufferRing;
use io_uring::{IoUring, cqueue, opcode, squeue, types};
use nix::errno::Errno;
use nix::sys::socket::MsgFlags;
use workbook::cli::Cli;
use workbook::echo_connection::OUTPUT_FULL;
use workbook::listener::{self, Accept};
use workbook::log::RateLimitedLog;
use workbook::{exit_with_error, log, show, signal};

const DEFAULT_PORT: u16 = 10019;
/// Submission queue entries: how many operations one io_uring_enter can carry.
const SUBMISSION_ENTRIES: u32 = 256;
/// Completion queue entries: room for the results of many submissions.
const COMPLETION_ENTRIES: u32 = 4096;
/// The receive buffers, shared by every connection: 4 MiB in all, by default
/// 1024 buffers of 4 KiB (`--buffer-size` changes the size, and so the number).
const BUFFER_MEMORY: u32 = 4 << 20;
const DEFAULT_BUFFER_SIZE: u32 = 4096;
/// Our one buffer group (a ring may have several, e.g. of different sizes).
const BUFFER_GROUP: u16 = 0;
/// Received bytes a connection may hold, not yet echoed, before it is no longer given
/// a receive (a client that sends and does not read stops being read).
const HELD_CAP: usize = 64 * 1024;
/// Buffers a connection may hold at once, whatever their bytes: a receive takes a
/// whole buffer even for 1 byte, so a client that trickles tiny segments and never
/// reads would otherwise hold the whole ring with a few bytes. HELD_CAP's worth of
/// buffers, and at most 1/64 of the ring, so that it takes 64 such clients to empty
/// the ring; but at least 2, so that a buffer can arrive while the previous one is
/// still being sent (with 64 KiB buffers or bigger, the ring has 64 or fewer, and
/// fewer clients empty it: 2 with `--buffer-size 1048576`). It holds exactly: a
/// connection has at most one receive in the ring, single-shot (see arm_receive).
fn held_buffers_cap(buffer_size: u32, buffer_count: u16) -> usize {
    (HELD_CAP / buffer_size as usize)
        .min(buffer_count as usize / 64)
        .max(2)
}
/// How long accepting pauses after EMFILE/ENFILE (or another error that would repeat).
const ACCEPT_PAUSE: Duration = Duration::from_millis(250);
/// Logged (unless --quiet) when a connection's receive stops for want of a buffer:
/// the first time for each connection, and after that at most once a second for all
/// of them (under a load that keeps the ring nearly empty it would be once an echo).
const STARVED: &str = "no receive buffer free (ENOBUFS), waiting for buffers to come back";
/// At most one accept error line a second (see src/log.rs).
static ACCEPT_ERRORS: RateLimitedLog = RateLimitedLog::new(Duration::from_secs(1));
static STARVED_AGAIN: RateLimitedLog = RateLimitedLog::new(Duration::from_secs(1));

// ANCHOR: user_data
/// Each submission carries 64 bits of `user_data` that come back in its completion:
/// here, what the operation was (the low byte) and which connection (the rest).
const ACCEPT: u64 = 1;
const WAKE: u64 = 2;
const RESUME_ACCEPT: u64 = 3;
const RECEIVE: u64 = 4;
const SEND: u64 = 5;

fn tag(kind: u64, slot: usize) -> u64 {
    (slot as u64) << 8 | kind
}
// ANCHOR_END: user_data

fn main() {
    let args = Cli::new(
        "19_uring_server",
        "Lesson 19: an echo server on io_uring (submission and completion queues).",
        DEFAULT_PORT,
    )
    .value(
        "--buffer-size",
        "BYTES",
        "size of each receive buffer, a power of two from 512 to 1048576 (default 4096)",
    )
    .switch("--quiet", "log only errors and the start and stop lines")
    .parse();
    let quiet = args.flag("--quiet");
    let buffer_size = match args.try_get::<u32>("--buffer-size") {
        Ok(size) => size.unwrap_or(DEFAULT_BUFFER_SIZE),
        Err(message) => args.usage_error(&message),
    };
    if !buffer_size.is_power_of_two() || !(512..=1 << 20).contains(&buffer_size) {
        args.usage_error("--buffer-size must be a power of two from 512 to 1048576");
    }
    let buffer_count = (BUFFER_MEMORY / buffer_size) as u16;
    let addr = args
        .socket_addr()
        .unwrap_or_else(|message| exit_with_error(&message));

    // ANCHOR: setup
    let ring = open_ring().unwrap_or_else(|message| exit_with_error(&message));
    let buffers = BufferRing::register(&ring, BUFFER_GROUP, buffer_count, buffer_size)
        .unwrap_or_else(|err| {
            exit_with_error(&format!(
                "io_uring has no provided buffer rings here (IORING_REGISTER_PBUF_RING: \
                 {err}); this lesson needs Linux 6.1 or later"
            ))
        });
    // socket, SO_REUSEADDR, bind, listen (lessons 01-02). Blocking: io_uring waits
    // for the connection itself (a non-blocking socket would make it fail with EAGAIN
    // instead on older kernels).
    let listener = listener::open(addr, 1024, Accept::Blocking);
    // Readable once Ctrl-C or SIGTERM came (lesson 05); a receive on it sits in the
    // ring like any other, so a signal completes it and wakes io_uring_enter.
    let wakeup = signal::shutdown_wakeup().unwrap_or_else(|message| exit_with_error(&message));
    if let Err(err) = wakeup.set_nonblocking(false) {
        exit_with_error(&format!("cannot set up the shutdown wake-up: {err}"));
    }
    // ANCHOR_END: setup
    let bound = listener.local_addr().unwrap_or(addr);
    let mut server = Server {
        ring,
        buffers,
        listener,
        wakeup,
        wake_byte: Box::new([0]),
        pause: Box::new(types::Timespec::from(ACCEPT_PAUSE)),
        connections: Vec::new(),
        free_slots: Vec::new(),
        starved: VecDeque::new(),
        backlog: VecDeque::new(),
        accepting: false,
        accept_paused: false,
        stopping: false,
        served: 0,
        partial_sends: 0,
        enters: 0,
        completed: 0,
        quiet,
        held_buffers: held_buffers_cap(buffer_size, buffer_count),
    };
    server.start();
    log::listening(bound);
    if !quiet {
        log!(
            "event loop: io_uring, {buffer_count} provided buffers of {buffer_size} bytes, \
             multishot accept, one receive at a time per connection"
        );
    }
    let stopped = server.run();
    let open = server.connections.iter().flatten().count();
    let served = server.served;
    let partial_sends = server.partial_sends;
    let batching = format!(
        "{} for {}",
        show::count(server.enters, "io_uring_enter call"),
        show::count(server.completed, "completion")
    );
    // Closes the ring (the kernel cancels what is still in it) before the buffers it
    // may write into, then every socket.
    drop(server);
    let reason = match stopped {
        Ok(()) => "signal".to_string(),
        Err(err) => format!("io_uring_enter failed: {err}"),
    };
    log::last_line(format!(
        "{} ({reason}): served {}, {}, {batching}, closed {} still open",
        log::SHUTTING_DOWN,
        show::count(served, "client"),
        show::count(partial_sends, "partial send"),
        show::count(open, "connection")
    ));
}

// ANCHOR: open_ring
/// io_uring_setup(2): the two queues, shared with the kernel by mmap(2). Fails where
/// io_uring is missing (before Linux 5.1), disabled (sysctl kernel.io_uring_disabled)
/// or blocked (the seccomp profiles of Docker, Android, ChromeOS; gVisor).
fn open_ring() -> Result<IoUring, String> {
    let release = nix::sys::utsname::uname()
        .map(|name| name.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut numbers = release.split(|c: char| !c.is_ascii_digit());
    let major: u32 = numbers.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let minor: u32 = numbers.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    if (major, minor) < (6, 1) {
        return Err(format!(
            "this lesson needs Linux 6.1 or later for io_uring's multishot receive and \
             deferred task running; this kernel is {release}"
        ));
    }
    IoUring::builder()
        .setup_cqsize(COMPLETION_ENTRIES)
        // Only this thread submits, and completions are processed only when it asks
        // (in io_uring_enter), not by interrupting it: less work per request.
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(SUBMISSION_ENTRIES)
        .map_err(|err| {
            format!(
                "io_uring is not available here (io_uring_setup: {err}); it may be \
                 disabled (sysctl kernel.io_uring_disabled) or blocked by seccomp \
                 (containers often block it)"
            )
        })
}
// ANCHOR_END: open_ring

// ANCHOR: connection
/// One client.
struct Connection {
    stream: TcpStream,
    peers: String,
    /// Buffers received and not yet echoed in full, in order. Each is one of the
    /// ring's buffers, lent to us by the kernel until we give it back.
    held: VecDeque<Held>,
    /// Their bytes not yet sent: less than HELD_CAP plus one buffer.
    held_bytes: usize,
    /// A receive is in the ring (one at a time: it takes at most one buffer).
    receiving: bool,
    /// A send is in the ring (one at a time, so that echoes stay in order).
    sending: bool,
    /// It stopped receiving because the buffer ring was empty (ENOBUFS), and waits
    /// in `Server::starved`.
    starved: bool,
    /// It found the ring empty before (then its STARVED line is rate-limited).
    starved_before: bool,
    /// It holds HELD_CAP or its buffers: no receive until its echo drains.
    held_full: bool,
    /// How often it was full. Only the first time is logged: a client that reads
    /// but sends messages of several buffers is full, briefly, at many of them.
    times_full: u32,
    /// The client half-closed (or closed): echo what is held, then close.
    read_closed: bool,
    /// Closing: waiting for its operations in the ring to end.
    closing: bool,
    error: Option<io::Error>,
}

/// Part of a received buffer still to be echoed.
struct Held {
    id: u16,
    start: usize,
    end: usize,
}
// ANCHOR_END: connection

impl Connection {
    /// Nothing of this connection is in the ring: its slot and socket may go.
    /// It holds HELD_CAP bytes, or `held_buffers` buffers, not yet echoed.
    fn is_full(&self, held_buffers: usize) -> bool {
        self.held_bytes >= HELD_CAP || self.held.len() >= held_buffers
    }

    fn idle_in_ring(&self) -> bool {
        !self.receiving && !self.sending
    }
}

/// The server's state. The order of fields matters: `ring` is dropped before
/// `buffers` (the kernel may write into them until the ring is closed).
struct Server {
    ring: IoUring,
    buffers: BufferRing,
    listener: TcpListener,
    wakeup: UnixStream,
    /// Where the wake-up receive writes its byte; boxed so that it does not move.
    wake_byte: Box<[u8; 1]>,
    /// The accept pause for IORING_OP_TIMEOUT, which reads it when it starts.
    pause: Box<types::Timespec>,
    /// Connections by slot (the slot is in each operation's user_data).
    connections: Vec<Option<Connection>>,
    free_slots: Vec<usize>,
    /// Connections waiting for buffers to come back to the ring, oldest first.
    starved: VecDeque<usize>,
    /// Submissions that did not fit in the submission queue, in order.
    backlog: VecDeque<squeue::Entry>,
    /// A multishot accept is in the ring.
    accepting: bool,
    /// Out of descriptors: not accepting until the pause's timeout completes.
    accept_paused: bool,
    stopping: bool,
    served: usize,
    /// Sends that sent less than asked (the rest went in another send).
    partial_sends: usize,
    /// Rounds of the loop (one io_uring_enter each) and completions handled: their
    /// ratio is how much one system call did.
    enters: usize,
    completed: usize,
    quiet: bool,
    /// How many buffers one connection may hold (see held_buffers_cap).
    held_buffers: usize,
}

impl Server {
    /// The first submissions: the multishot accept and the wake-up receive.
    fn start(&mut self) {
        self.arm_accept();
        let wake = opcode::Recv::new(
            types::Fd(self.wakeup.as_raw_fd()),
            self.wake_byte.as_mut_ptr(),
            1,
        );
        self.push(wake.build().user_data(WAKE))
    }

    // ANCHOR: run
    /// The loop: one io_uring_enter(2) submits everything queued since the last one
    /// and waits for at least one completion; then every completion is handled, which
    /// queues the next submissions (sends, receives) for the next round.
    fn run(&mut self) -> io::Result<()> {
        let mut completions: Vec<(u64, i32, u32)> = Vec::new();
        while !self.stopping {
            self.enters += 1;
            self.push_backlog();
            // With submissions still waiting for room, submit without waiting: the
            // next round takes more of them. The same while starved connections and
            // free buffers both remain: the next ones are fed in the next round.
            let more_to_feed = self.buffers.free() > 0 && !self.starved.is_empty();
            let wait = if self.backlog.is_empty() && !more_to_feed {
                1
            } else {
                0
            };
            match self.ring.submit_and_wait(wait) {
                Ok(_) => {}
                // A signal (handled on ctrlc's thread) interrupted the wait; EBUSY: the
                // completion queue overflowed, and reading it below makes room (what
                // was not submitted stays in the queue for the next round).
                Err(err)
                    if matches!(
                        err.raw_os_error().map(Errno::from_raw),
                        Some(Errno::EINTR | Errno::EBUSY)
                    ) => {}
                Err(err) => return Err(err),
            }
            completions.clear();
            completions.extend(
                self.ring
                    .completion()
                    .map(|entry| (entry.user_data(), entry.result(), entry.flags())),
            );
            self.completed += completions.len();
            for &(user_data, result, flags) in &completions {
                self.complete(user_data, result, flags);
            }
            if self.buffers.free() > 0 && !self.starved.is_empty() {
                self.feed_starved();
            }
        }
        Ok(())
    }
    // ANCHOR_END: run

    fn complete(&mut self, user_data: u64, result: i32, flags: u32) {
        let slot = (user_data >> 8) as usize;
        match user_data & 0xff {
            ACCEPT => self.accepted(result, flags),
            WAKE => {
                self.stopping = true;
            }
            RESUME_ACCEPT => {
                self.accept_paused = false;
                if !self.accepting {
                    self.arm_accept();
                }
            }
            RECEIVE => self.received(slot, result, flags),
            SEND => self.sent(slot, result),
            _ => {}
        }
    }

    // ANCHOR: push
    /// Queues one submission. When the queue is full, the entry waits in `backlog`
    /// for the next round: no io_uring_enter here, in the middle of handling a batch
    /// (its errors, EBUSY or EINTR, are then only the loop's to handle, and the
    /// completions it would post could not be read until the next round anyway).
    fn push(&mut self, entry: squeue::Entry) {
        if !self.backlog.is_empty() || !self.try_push(&entry) {
            self.backlog.push_back(entry);
        }
    }

    /// Moves what waits in `backlog` into the submission queue, as far as it has room.
    fn push_backlog(&mut self) {
        while let Some(entry) = self.backlog.pop_front() {
            if !self.try_push(&entry) {
                self.backlog.push_front(entry);
                return;
            }
        }
    }

    fn try_push(&mut self, entry: &squeue::Entry) -> bool {
        // SAFETY: every pointer an entry carries stays valid until its completion:
        // sends point into a buffer the connection holds until the send completes,
        // the wake-up receive into `wake_byte`, the timeout at `pause` (both boxed
        // in the server, which outlives the ring's use of them).
        unsafe { self.ring.submission().push(entry) }.is_ok()
    }
    // ANCHOR_END: push

    // ANCHOR: accept
    /// IORING_OP_ACCEPT with the multishot flag: one submission, a completion for
    /// every connection accepted, until it ends (no IORING_CQE_F_MORE).
    fn arm_accept(&mut self) {
        self.accepting = true;
        let accept = opcode::AcceptMulti::new(types::Fd(self.listener.as_raw_fd()));
        self.push(accept.build().user_data(ACCEPT))
    }

    fn accepted(&mut self, result: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.accepting = false;
        }
        if result >= 0 {
            // SAFETY: a descriptor the kernel has just made for us; nothing else owns it.
            let stream = unsafe { TcpStream::from_raw_fd(result) };
            self.new_connection(stream);
        } else {
            let err = io::Error::from_raw_os_error(-result);
            match Errno::from_raw(-result) {
                // That client reset its connection before we took it.
                Errno::ECONNABORTED | Errno::EINTR => log!("{} accept: {err}", log::ERROR),
                // EMFILE/ENFILE (out of descriptors), ENOBUFS/ENOMEM, or anything else
                // the next accept would meet again: pause, do not spin.
                _ => {
                    ACCEPT_ERRORS.line(format!(
                        "{} accept: {err}; pausing accept for {} ms",
                        log::ERROR,
                        ACCEPT_PAUSE.as_millis()
                    ));
                    // An error ends a multishot accept (no IORING_CQE_F_MORE): there
                    // is no accept in the ring to cancel, only one not to submit yet.
                    if !self.accept_paused {
                        self.accept_paused = true;
                        let timeout = opcode::Timeout::new(&*self.pause);
                        self.push(timeout.build().user_data(RESUME_ACCEPT));
                    }
                }
            }
        }
        if !self.accepting && !self.accept_paused && !self.stopping {
            self.arm_accept();
        }
    }
    // ANCHOR_END: accept

    fn new_connection(&mut self, stream: TcpStream) {
        self.served += 1;
        let peers = show::peers(&stream);
        if !self.quiet {
            log!("{} {peers}", log::CONNECTED);
        }
        // TCP_NODELAY (lesson 02): an echo bigger than one buffer goes back as several
        // sends, one per receive. With Nagle's algorithm on, the last small one waits
        // for the ACK of the others, and the client delays that ACK by up to 40 ms: a
        // 64 KiB echo took 43 ms before this line (the load lab's 50 x 64 KiB row).
        if let Err(err) = stream.set_nodelay(true) {
            log!("{} {peers}: cannot set TCP_NODELAY: {err}", log::ERROR);
        }
        let connection = Connection {
            stream,
            peers,
            held: VecDeque::new(),
            held_bytes: 0,
            receiving: false,
            sending: false,
            starved: false,
            starved_before: false,
            held_full: false,
            times_full: 0,
            read_closed: false,
            closing: false,
            error: None,
        };
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.connections[slot] = Some(connection);
                slot
            }
            None => {
                self.connections.push(Some(connection));
                self.connections.len() - 1
            }
        };
        self.arm_receive(slot)
    }

    fn connection(&mut self, slot: usize) -> Option<&mut Connection> {
        self.connections.get_mut(slot).and_then(Option::as_mut)
    }

    // ANCHOR: receive
    /// IORING_OP_RECV with IOSQE_BUFFER_SELECT: no buffer is named; the kernel takes
    /// one from our buffer group when data arrives. Single-shot, not multishot: a
    /// multishot receive takes a buffer for every arrival until it is cancelled, and
    /// a cancel reaches the kernel only at the next io_uring_enter, so a client that
    /// does not read could take 113 buffers against a cap of 16 meanwhile. One
    /// receive at a time takes at most one buffer, and `settle` arms the next only
    /// below the caps: a connection never holds more than `held_buffers` buffers.
    fn arm_receive(&mut self, slot: usize) {
        let Some(connection) = self.connection(slot) else {
            return;
        };
        connection.receiving = true;
        let fd = types::Fd(connection.stream.as_raw_fd());
        // Length 0: as much as the buffer the kernel picks can take.
        let receive = opcode::Recv::new(fd, std::ptr::null_mut(), 0)
            .buf_group(BUFFER_GROUP)
            .build()
            .flags(squeue::Flags::BUFFER_SELECT);
        self.push(receive.user_data(tag(RECEIVE, slot)))
    }

    fn received(&mut self, slot: usize, result: i32, flags: u32) {
        let quiet = self.quiet;
        let Some(connection) = self.connections.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        connection.receiving = false;
        if result > 0 {
            let Some(id) = cqueue::buffer_select(flags) else {
                connection.error = Some(io::Error::other("a receive came without a buffer"));
                return self.settle(slot);
            };
            self.buffers.lent(id);
            let len = result as usize;
            if connection.closing {
                self.buffers.give_back(id);
                return self.settle(slot);
            }
            if !quiet {
                let data = show::bytes(self.buffers.data(id, len));
                let size = show::count(len, "byte");
                log!("{} {size} from {}: {data}", log::RECEIVED, connection.peers);
            }
            connection.held.push_back(Held {
                id,
                start: 0,
                end: len,
            });
            connection.held_bytes += len;
            if !connection.sending {
                self.send_next(slot);
            }
        } else if result == 0 {
            // EOF: the client half-closed or closed.
            connection.read_closed = true;
        } else {
            match Errno::from_raw(-result) {
                // A closing connection waits for nothing.
                Errno::ENOBUFS if connection.closing => {}
                // The buffer ring was empty when it tried: it waits in line until the
                // end of a round finds buffers free (see `run` and `feed_starved`).
                Errno::ENOBUFS => {
                    connection.starved = true;
                    self.starved.push_back(slot);
                    let first = !std::mem::replace(&mut connection.starved_before, true);
                    if !quiet && first {
                        log!("{}: {STARVED}", connection.peers);
                    } else if !quiet {
                        STARVED_AGAIN.line(format!("{}: {STARVED}", connection.peers));
                    }
                }
                // ECONNRESET and the like: this client is gone.
                _ => connection.error = Some(io::Error::from_raw_os_error(-result)),
            }
        }
        self.settle(slot)
    }

    // ANCHOR_END: receive

    // ANCHOR: send
    /// IORING_OP_SEND of the oldest held bytes, straight from the buffer the kernel
    /// received them into (no copy).
    fn send_next(&mut self, slot: usize) {
        let Some(connection) = self.connection(slot) else {
            return;
        };
        let Some(held) = connection.held.front() else {
            return;
        };
        connection.sending = true;
        let fd = types::Fd(connection.stream.as_raw_fd());
        let (id, start, len) = (held.id, held.start, (held.end - held.start) as u32);
        // The buffer stays out of the ring until this send's completion.
        let data = self.buffers.address(id).wrapping_add(start);
        let send = opcode::Send::new(fd, data, len).flags(MsgFlags::MSG_NOSIGNAL.bits());
        self.push(send.build().user_data(tag(SEND, slot)))
    }

    /// A send completed: it may have sent less than asked (a partial send, as with
    /// send(2)); then the rest goes in the next send.
    fn sent(&mut self, slot: usize, result: i32) {
        let Some(connection) = self.connections.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        connection.sending = false;
        if result <= 0 {
            // EPIPE, ECONNRESET: the client is gone (0: nothing could be sent).
            if connection.error.is_none() && !connection.closing {
                connection.error = Some(match result {
                    0 => io::ErrorKind::WriteZero.into(),
                    _ => io::Error::from_raw_os_error(-result),
                });
            }
            return self.settle(slot);
        }
        let sent = result as usize;
        connection.held_bytes -= sent;
        let mut finished = None;
        let mut partial = false;
        if let Some(held) = connection.held.front_mut() {
            held.start += sent;
            partial = held.start < held.end;
            if !partial {
                finished = Some(held.id);
                connection.held.pop_front();
            }
        }
        if partial {
            self.partial_sends += 1;
        }
        if let Some(id) = finished {
            self.buffers.give_back(id);
        }
        if !self.connection(slot).is_some_and(|c| c.closing) {
            self.send_next(slot);
        }
        self.settle(slot)
    }
    // ANCHOR_END: send

    // ANCHOR: settle
    /// After any completion of a connection: start receiving again, close, or free it.
    fn settle(&mut self, slot: usize) {
        let (quiet, held_buffers) = (self.quiet, self.held_buffers);
        let Some(connection) = self.connection(slot) else {
            return;
        };
        if !connection.closing {
            let done = connection.read_closed && connection.held.is_empty();
            if connection.error.is_some() || done {
                connection.closing = true;
                if !connection.idle_in_ring() {
                    // shutdown(2) ends what is in the ring: the receive completes
                    // with EOF, a waiting send fails with EPIPE.
                    let _ = connection.stream.shutdown(Shutdown::Both);
                }
            } else if !connection.receiving && !connection.read_closed && !connection.starved {
                // Bounded memory: a client that sends and does not read the echo holds
                // buffers; at either cap it gets no receive, so the kernel keeps the
                // rest in the socket buffer and TCP's window stops the client.
                if !connection.is_full(held_buffers) {
                    let first = connection.times_full == 1;
                    if std::mem::take(&mut connection.held_full) && first && !quiet {
                        log!("{}: echo drained, receiving again", connection.peers);
                    }
                    return self.arm_receive(slot);
                }
                if !std::mem::replace(&mut connection.held_full, true) {
                    connection.times_full = connection.times_full.saturating_add(1);
                    if connection.times_full == 1 && !quiet {
                        log!(
                            "{}: {OUTPUT_FULL} (HELD_CAP or its buffers), not receiving \
                             until its echo goes out",
                            connection.peers
                        );
                    }
                }
            }
        }
        if connection.closing && connection.idle_in_ring() {
            self.release(slot);
        }
    }

    /// Gives its buffers back, logs, closes the socket (drop) and frees the slot.
    fn release(&mut self, slot: usize) {
        let Some(connection) = self.connections.get_mut(slot).and_then(Option::take) else {
            return;
        };
        for held in &connection.held {
            self.buffers.give_back(held.id);
        }
        match &connection.error {
            Some(error) => log!("{} {}: {error}", log::DISCONNECTED, connection.peers),
            None if !self.quiet => log!("{} {}", log::DISCONNECTED, connection.peers),
            None => {}
        }
        self.free_slots.push(slot);
    }
    // ANCHOR_END: settle

    /// Buffers are free: as many of the connections waiting for them as there are
    /// free buffers receive again, the longest waiting first. Feeding all of them
    /// would cost a completion each, most of them ENOBUFS again, for every buffer
    /// given back. A fed connection leaves the line with its receive in the ring;
    /// if it is idle it takes no buffer, the buffers stay free, and the next round
    /// feeds the next ones (`run` does not wait then), so one with data behind idle
    /// ones is reached. One that finds the ring empty again goes to the back.
    fn feed_starved(&mut self) {
        for _ in 0..self.buffers.free() {
            let Some(slot) = self.starved.pop_front() else {
                break;
            };
            if let Some(connection) = self.connection(slot) {
                connection.starved = false;
            }
            self.settle(slot);
        }
    }
}
