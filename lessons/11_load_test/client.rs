//! Lesson 11, the load client: drives an echo server with `--conns` connections, each
//! doing `--requests` round trips of `--size` bytes, one after the other (a closed
//! loop), checks every byte of every echo, and reports throughput and latency
//! percentiles from a histogram.
//!
//!   terminal 1: cargo run --release --bin 08_event_loop_server -- --quiet
//!   terminal 2: cargo run --release --bin 11_load_test_client -- --port 10008 --conns 50
//!
//! With `--reply ctime` it drives lesson 10's time server instead: each message ends
//! with its only `\r\n`, and the reply must be one line, `<ctime>\r\n`.
//!
//! With `--reply http` it drives lesson 12's web server: each request is
//! `GET /hello`, and each reply must be `HTTP/1.1 200` with a Content-Length body
//! `Hello WORD`. Keep-alive by default; `--new-connection-per-request` opens a
//! connection for each request instead, to measure what keep-alive saves.
//!
//! With `--tls CA` it drives lesson 14's TLS echo server, verifying it against the CA
//! file (one blocking thread per connection; `tls.rs`). `--new-connection-per-request`
//! with the echo (plain or TLS) makes every request a new connection: what a
//! handshake costs.
//!
//! Each thread runs its share of the connections with non-blocking sockets and
//! epoll(7), so a few threads drive hundreds of connections without becoming the
//! bottleneck themselves.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::time::{TimeSpec, TimeValLike};
use nix::sys::timer::Expiration;
use nix::sys::timerfd::{ClockId, TimerFd, TimerFlags, TimerSetTimeFlags};
use socket2::{Domain, Socket};
use workbook::cli::Cli;
use workbook::{connect_failed, exit_with_error, print_line, room_for_descriptors};

mod tls;

/// A connection that makes no progress for this long is reported as stalled.
const STALL: Duration = Duration::from_secs(10);

/// `--duration`: after the deadline no request is sent, and the replies still on
/// their way get this long to come; then the run ends, and a request still without
/// its reply is counted as unanswered (the run was not clean).
const GRACE: Duration = Duration::from_secs(1);

/// The largest `--size`, and the most that the messages of all the connections may
/// hold together (each connection keeps its message, `--size` bytes, for the run).
const MAX_SIZE: usize = 1 << 30;
const MAX_MESSAGES: u128 = 4 << 30;

/// The most client threads (`--threads`, and the blocking modes' thread per
/// connection slot): more than a few per core only costs memory.
const MAX_THREADS: usize = 1024;

// ANCHOR: histogram
/// Latencies in nanoseconds, in buckets whose width grows with the value: 64 buckets
/// per power of two, so every bucket is within 1.6% of the values it holds, from
/// nanoseconds to minutes, in 4,096 counters. Percentiles come from the counts; no
/// latency is averaged or stored one by one.
#[derive(Clone)]
struct Histogram {
    counts: Vec<u64>,
    max: u64,
}

const SUB_BUCKETS: u64 = 64;

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new()
    }
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            counts: vec![0; 64 * SUB_BUCKETS as usize],
            max: 0,
        }
    }

    fn index(value: u64) -> usize {
        if value < 2 * SUB_BUCKETS {
            return value as usize;
        }
        let exponent = 63 - value.leading_zeros() as u64; // value >= 2^exponent
        let shift = exponent - 6; // keep 7 significant bits: 64..128
        ((shift + 1) * SUB_BUCKETS + (value >> shift) - SUB_BUCKETS) as usize
    }

    /// The smallest value that falls into bucket `index`.
    fn lower_bound(index: usize) -> u64 {
        let index = index as u64;
        if index < 2 * SUB_BUCKETS {
            return index;
        }
        let shift = index / SUB_BUCKETS - 1;
        (index % SUB_BUCKETS + SUB_BUCKETS) << shift
    }

    fn record(&mut self, value: u64) {
        let index = Histogram::index(value).min(self.counts.len() - 1);
        self.counts[index] += 1;
        self.max = self.max.max(value);
    }

    fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.max = self.max.max(other.max);
    }

    fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The value below which `fraction` of the recorded values fall, as the lower
    /// bound of its bucket (so up to 1.6% low); the maximum is exact.
    fn percentile(&self, fraction: f64) -> u64 {
        let total = self.total();
        if total == 0 {
            return 0;
        }
        let rank = ((fraction * total as f64).ceil() as u64).clamp(1, total);
        if rank == total {
            return self.max; // the largest value is known exactly
        }
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Histogram::lower_bound(index).min(self.max);
            }
        }
        self.max
    }
}
// ANCHOR_END: histogram

/// The byte at `offset` of every message of connection `conn`: connections' messages
/// differ, so most misrouted echoes fail at once.
fn pattern(conn: usize, offset: usize) -> u8 {
    (conn as u64 * 7 + offset as u64 % 251) as u8
}

/// The first message of connection `number`. An echo message is then stamped: bytes
/// 0..8 with the request's number (a stale echo is caught) and 8..12 with the
/// connection's (an echo sent to the wrong connection is caught, whatever the
/// pattern). Messages under 12 bytes hold only part of the stamp, and the check is
/// weaker. For `--reply ctime` the message ends with `\r\n`, the only one in it: the
/// pattern never puts 10 right after 13, and it carries no stamp (a time line says
/// nothing of which request it answers).
fn message(number: usize, load: &Load) -> Vec<u8> {
    if load.reply == Reply::Http {
        return HTTP_REQUEST.to_vec();
    }
    let mut message: Vec<u8> = (0..load.size)
        .map(|offset| pattern(number, offset))
        .collect();
    match load.reply {
        Reply::CtimeLine => message[load.size - 2..].copy_from_slice(b"\r\n"),
        Reply::Http => {}
        Reply::Echo => {
            let connection = (number as u32).to_le_bytes();
            for (offset, byte) in connection.iter().enumerate() {
                if let Some(slot) = message.get_mut(8 + offset) {
                    *slot = *byte;
                }
            }
        }
    }
    message
}

struct Conn {
    /// A TCP connection, or with --unix an AF_UNIX stream: the same calls on both.
    stream: Socket,
    number: usize,
    request: u64,
    message: Vec<u8>,
    written: usize,
    echoed: usize,
    started: Instant,
    last_progress: Instant,
    /// Watched for EPOLLOUT too (a message did not fit in the send buffer).
    writing: bool,
    /// The last reply is in: the write side is shut, and we read until the server
    /// closes, to catch bytes it should not have sent.
    draining: bool,
    done: bool,
    /// `--reply ctime`: the reply line so far.
    line: [u8; CTIME_LINE],
    /// `--reply http`: the reply so far, the length of its head once its `\r\n\r\n`
    /// has come (0 before), and the whole reply's length (head plus Content-Length).
    http: [u8; HTTP_REPLY_MAX],
    http_head: usize,
    http_size: usize,
    /// `--rate`: the next request is not due yet; wake at this time, when it is due
    /// or at the deadline (`--duration`) if that comes first.
    wake: Option<Instant>,
}

/// What the server sends back for each message.
#[derive(Clone, Copy, PartialEq)]
enum Reply {
    /// The same bytes (lessons 04 to 08).
    Echo,
    /// One line, `Fri Dec  4 16:55:42 2026\r\n` (lesson 10).
    CtimeLine,
    /// `HTTP/1.1 200 ...`, headers, and the body `Hello WORD` (lesson 12).
    Http,
}

/// `--reply http`: the request, the same every time. HTTP/1.1 keeps the connection
/// open unless a side says otherwise.
const HTTP_REQUEST: &[u8] = b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
/// `--new-connection-per-request`: the client says it will not send another.
const HTTP_REQUEST_CLOSE: &[u8] =
    b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
/// The body lesson 12 sends for `/hello`.
const HTTP_BODY: &[u8] = b"Hello WORD";
/// A reply longer than this (head and body) is an error: lesson 12's is about 150.
const HTTP_REPLY_MAX: usize = 1024;

/// A ctime is always 24 characters; the line adds `\r\n`.
const CTIME_LINE: usize = 26;

struct Load {
    size: usize,
    requests: u64,
    deadline: Option<Instant>,
    reply: Reply,
    /// `--rate`: requests per second over all the connections (an open loop), how
    /// many connections share them, and when the schedule starts.
    rate: Option<f64>,
    conns: usize,
    started: Instant,
}

impl Load {
    /// When the run ends for good: the deadline plus `GRACE` (none without
    /// `--duration`).
    fn grace_end(&self) -> Option<Instant> {
        self.deadline.map(|deadline| deadline + GRACE)
    }

    /// How long a blocking call may wait from `now`: `STALL`, or less when the end of
    /// the grace comes first (at least 1 ms: a zero timeout means "wait forever").
    fn wait_limit(&self, now: Instant) -> Duration {
        let left = self
            .grace_end()
            .map_or(STALL, |end| end.saturating_duration_since(now));
        left.min(STALL).max(Duration::from_millis(1))
    }

    /// Open loop with `--duration`: how many requests of connection `number` were due
    /// before the deadline (request n is due (n*N + number)/R seconds after the start).
    fn due_before_deadline(&self, number: usize) -> u64 {
        let (Some(rate), Some(deadline)) = (self.rate, self.deadline) else {
            return 0;
        };
        let slots = deadline.duration_since(self.started).as_secs_f64() * rate;
        let ahead = slots - number as f64; // slots before the deadline from this one on
        if ahead <= 0.0 {
            return 0;
        }
        ((ahead / self.conns as f64).ceil() as u64).min(self.requests)
    }
}

#[derive(Default)]
struct Outcome {
    latencies: Histogram,
    errors: Vec<String>,
    /// Requests sent whose reply had not come at the end of the grace.
    unanswered: u64,
    /// Open loop: requests due before the deadline that were never sent, because
    /// their connection was still waiting for an earlier reply.
    not_sent: u64,
}

fn main() {
    let args = Cli::new(
        "11_load_test_client",
        "Lesson 11: a closed-loop load generator for the echo servers (and, with \
         --reply, lesson 10's time server and lesson 12's web server); checks every \
         reply and reports requests/s and latency percentiles.",
        10008,
    )
    .value(
        "--conns",
        "N",
        "active connections (default 50; at most 1024 with --tls or \
         --new-connection-per-request, a thread each)",
    )
    .value(
        "--requests",
        "M",
        "round trips per connection (default 1000)",
    )
    .value(
        "--size",
        "BYTES",
        "message size (default 64, at most 1 GiB, and --size x --conns at most 4 GiB; \
         not with --reply http, whose request is fixed)",
    )
    .value(
        "--idle",
        "K",
        "extra idle connections held open during the run (default 0)",
    )
    .value(
        "--duration",
        "SECS",
        "stop after this long instead (at most 3600): no request is sent after it, the \
         replies on their way get 1 s more, and a request still unanswered then is \
         counted as such (exit status 1); with --rate, a request due later is not sent",
    )
    .value(
        "--threads",
        "T",
        "client threads sharing the connections (default 2, at most 1024)",
    )
    .value(
        "--rate",
        "R",
        "open loop: R requests/s in all, on a schedule shared by the connections (each \
         sends R/N a second, one at a time), and each latency counts from when its \
         request was due, not from when it left; with --duration, the requests due and \
         never sent (their connection still waiting for a reply) are counted on a \
         `not sent:` line (default: closed loop; not with --tls nor \
         --new-connection-per-request)",
    )
    .value(
        "--reply",
        "KIND",
        "echo (the same bytes back, default), ctime (one `<ctime>\\r\\n` line per \
         message, lesson 10) or http (GET /hello, an HTTP/1.1 reply `Hello WORD`, \
         lesson 12; keep-alive)",
    )
    .switch(
        "--new-connection-per-request",
        "with --reply http: each request on a new connection, with Connection: close \
         (one blocking thread per connection slot; --threads does not apply); with the \
         echo: connect, (handshake,) one echo, close",
    )
    .value(
        "--tls",
        "CA",
        "talk TLS to the server (lesson 14), verifying it against the CA file CA, for \
         the name --host (echo only; one blocking thread per connection)",
    )
    .value(
        "--unix",
        "PATH",
        "connect to an AF_UNIX stream server at PATH instead of --host/--port \
         (lesson 16's server), to compare it with TCP loopback",
    )
    .switch(
        "--tls-resume",
        "with --tls: resume sessions (TLS 1.3 session tickets from earlier connections: \
         no certificate sent, no signature); default: every handshake is a full one",
    )
    .parse();
    let conns: usize = args.get_or("--conns", 50);
    // With --duration alone, the time is the only bound.
    let duration: Option<f64> = args.get("--duration");
    let default_requests = if duration.is_some() { u64::MAX } else { 1000 };
    let requests: u64 = args.get_or("--requests", default_requests);
    let mut size: usize = args.get_or("--size", 64);
    let idle: usize = args.get_or("--idle", 0);
    let threads: usize = args.get_or("--threads", 2);
    let rate: Option<f64> = args.get("--rate");
    // At least 1/s: a tiny rate would put the next request past what a Duration holds.
    if rate.is_some_and(|rate| !(1.0..=1e6).contains(&rate)) {
        args.usage_error("--rate must be at least 1 and at most 1000000 requests/s");
    }
    if conns == 0 || size == 0 || requests == 0 || threads == 0 {
        args.usage_error("--conns, --requests, --size and --threads must be at least 1");
    }
    // Each thread and each connection's message costs memory, allocated up front: a
    // huge number would panic, abort or swap, not measure anything.
    if threads > MAX_THREADS {
        args.usage_error(&format!("--threads must be at most {MAX_THREADS}"));
    }
    if size > MAX_SIZE || size as u128 * conns as u128 > MAX_MESSAGES {
        args.usage_error(
            "--size must be at most 1 GiB (1073741824), and --size x --conns at most 4 GiB",
        );
    }
    let reply = match args.get_or("--reply", "echo".to_string()).as_str() {
        "echo" => Reply::Echo,
        "ctime" => Reply::CtimeLine,
        "http" => Reply::Http,
        other => args.usage_error(&format!(
            "--reply must be echo, ctime or http, not '{other}'"
        )),
    };
    let new_connection = args.flag("--new-connection-per-request");
    let tls_ca: Option<String> = args.get("--tls");
    if tls_ca.is_some() && reply != Reply::Echo {
        args.usage_error("--tls works with the echo (--reply echo) only");
    }
    if new_connection && reply == Reply::CtimeLine {
        args.usage_error("--new-connection-per-request needs --reply http or echo");
    }
    if rate.is_some() && (tls_ca.is_some() || new_connection) {
        // Those run on blocking threads, one request after another: no open loop.
        args.usage_error("--rate does not go with --tls, nor with --new-connection-per-request");
    }
    // One blocking thread per connection slot: a thread each costs far more than an
    // epoll connection, so fewer of them.
    if (tls_ca.is_some() || new_connection) && conns > MAX_THREADS {
        args.usage_error(&format!(
            "with --tls or --new-connection-per-request (a thread per connection slot), \
             --conns must be at most {MAX_THREADS}"
        ));
    }
    // One blocking thread per connection slot: TLS, or a new echo connection each time.
    let blocking = match &tls_ca {
        Some(ca) => {
            let mut config = workbook::tls::client_config(std::path::Path::new(ca))
                .unwrap_or_else(|why| exit_with_error(&why));
            // rustls keeps the server's session tickets in the (shared) config and
            // resumes with them: a new connection then skips the certificate and its
            // signature. Off unless asked, so that a handshake costs what a first one does.
            if !args.flag("--tls-resume") {
                std::sync::Arc::make_mut(&mut config).resumption =
                    rustls::client::Resumption::disabled();
            }
            let name =
                workbook::tls::server_name(&args.host).unwrap_or_else(|why| args.usage_error(&why));
            Some(tls::Transport::Tls(config, name))
        }
        None if new_connection && reply == Reply::Echo => Some(tls::Transport::Plain),
        None => None,
    };
    if tls_ca.is_none() && args.flag("--tls-resume") {
        args.usage_error("--tls-resume goes with --tls");
    }
    if let Some(ca) = &tls_ca {
        let handshakes = if args.flag("--tls-resume") {
            "sessions resumed"
        } else {
            "full handshakes"
        };
        print_line(&format!(
            "over TLS, the server verified against {ca} ({handshakes})"
        ));
    }
    if reply == Reply::Http {
        if args.get::<String>("--size").is_some() {
            args.usage_error("--size does not apply to --reply http (the request is fixed)");
        }
        size = if new_connection {
            HTTP_REQUEST_CLOSE.len()
        } else {
            HTTP_REQUEST.len()
        };
    }
    if reply == Reply::CtimeLine && size < 2 {
        args.usage_error("--reply ctime needs --size 2 or more (the message ends with \\r\\n)");
    }
    if duration.is_some_and(|secs| !(secs > 0.0 && secs <= 3600.0)) {
        args.usage_error("--duration must be more than 0 and at most 3600 seconds");
    }
    let addr = args
        .socket_addr()
        .unwrap_or_else(|message| exit_with_error(&message));
    let unix: Option<PathBuf> = args.get::<String>("--unix").map(PathBuf::from);
    if unix.is_some() && new_connection {
        args.usage_error("--unix does not go with --new-connection-per-request");
    }
    let descriptors = conns.saturating_add(idle).saturating_add(64);
    room_for_descriptors(descriptors, "connections, idle ones and a few more")
        .unwrap_or_else(|message| exit_with_error(&message));

    let server = match reply {
        Reply::Http => "an HTTP server",
        Reply::Echo | Reply::CtimeLine => "an echo server",
    };
    // Idle connections first: open, and never used, for as long as the run lasts.
    let mut idle_streams = Vec::with_capacity(idle);
    for _ in 0..idle {
        match open(addr, unix.as_deref()) {
            Ok(stream) => idle_streams.push(stream),
            Err(err) => exit_with_error(&format!(
                "opening idle connection {}: {}",
                idle_streams.len() + 1,
                open_failed(addr, unix.as_deref(), &err, server)
            )),
        }
    }
    let mut active = Vec::with_capacity(conns);
    // With --new-connection-per-request each request opens its own, in the run; with
    // --tls each slot opens its own on its thread.
    for number in (0..conns).filter(|_| !new_connection && blocking.is_none()) {
        match open(addr, unix.as_deref()) {
            Ok(stream) => active.push((number, stream)),
            Err(err) => exit_with_error(&open_failed(addr, unix.as_deref(), &err, server)),
        }
    }
    if let Some(path) = &unix {
        print_line(&format!("over AF_UNIX: {}", path.display()));
    }

    if let Some(rate) = rate {
        print_line(&open_loop_line(rate, conns, requests, duration));
    }

    // ANCHOR: run
    // The runner reads the server's CPU time when it sees these two lines.
    print_line("measuring: started");
    let cpu_at_start = own_cpu_seconds();
    let started = Instant::now();
    let load = Load {
        size,
        requests,
        deadline: duration.map(|secs| started + Duration::from_secs_f64(secs)),
        reply,
        rate,
        conns,
        started,
    };
    // Deal the connections out to the threads, round-robin.
    // No more threads than connections: an extra one would have nothing to do.
    let threads = threads.min(conns);
    let mut shares: Vec<Vec<(usize, Socket)>> = (0..threads).map(|_| Vec::new()).collect();
    for (index, conn) in active.into_iter().enumerate() {
        shares[index % threads].push(conn);
    }
    let outcomes: Vec<Outcome> = thread::scope(|scope| {
        let running: Vec<_> = shares
            .into_iter()
            .filter(|share| !share.is_empty())
            .map(|share| scope.spawn(|| drive(share, &load)))
            .chain(
                (0..conns)
                    .filter(|_| new_connection && blocking.is_none())
                    .map(|number| {
                        let load = &load;
                        scope.spawn(move || drive_new_connections(number, addr, load))
                    }),
            )
            .chain(blocking.iter().flat_map(|transport| {
                let load = &load;
                (0..conns).map(move |number| {
                    scope.spawn(move || tls::drive(number, addr, transport, load, new_connection))
                })
            }))
            .collect();
        running
            .into_iter()
            .map(|handle| {
                handle.join().unwrap_or_else(|_| Outcome {
                    errors: vec!["a client thread panicked".into()],
                    ..Outcome::default()
                })
            })
            .collect()
    });
    let elapsed = started.elapsed();
    let cpu = own_cpu_seconds() - cpu_at_start;
    print_line("measuring: finished");
    // ANCHOR_END: run
    drop(idle_streams);

    let mut total = Outcome::default();
    for outcome in &outcomes {
        total.latencies.merge(&outcome.latencies);
        total.errors.extend(outcome.errors.iter().cloned());
        total.unanswered += outcome.unanswered;
        total.not_sent += outcome.not_sent;
    }
    report(
        conns,
        idle,
        size,
        (reply, new_connection),
        &total,
        elapsed,
        cpu,
    );
    // A request left without its reply: the server did not keep up, the run was not
    // clean.
    if !total.errors.is_empty() || total.unanswered > 0 {
        std::process::exit(1);
    }
}

/// What `--rate` will do, said before the run, with how long it lasts: the last
/// request is due about M x N / R seconds after the start (1,000 requests on each of
/// 50 connections at 1 a second is 14 hours), unless the deadline comes first.
fn open_loop_line(rate: f64, conns: usize, requests: u64, duration: Option<f64>) -> String {
    let schedule = requests as f64 * conns as f64 / rate;
    let length = match duration {
        Some(secs) if secs <= schedule => {
            format!("it ends after {secs} s (a request due later is not sent)")
        }
        _ => {
            let hours = if schedule >= 3600.0 {
                format!(" ({:.1} hours)", schedule / 3600.0)
            } else {
                String::new()
            };
            format!(
                "the schedule takes {schedule:.1} s{hours}: {requests} requests x {conns} \
                 connection{} / {rate} a second",
                if conns == 1 { "" } else { "s" }
            )
        }
    };
    // Under one a second per connection, the interval reads better than 0.0.
    let per_connection = rate / conns as f64;
    let per_connection = if per_connection >= 1.0 {
        format!("{per_connection:.1} per connection")
    } else {
        format!(
            "one request every {:.1} s per connection",
            1.0 / per_connection
        )
    };
    format!(
        "open loop: {rate} requests/s in all, {per_connection}, each latency from when \
         its request was due; {length}"
    )
}

#[allow(clippy::too_many_arguments)]
fn report(
    conns: usize,
    idle: usize,
    size: usize,
    (reply, new_connection): (Reply, bool),
    outcome: &Outcome,
    elapsed: Duration,
    cpu: f64,
) {
    let (latencies, errors) = (&outcome.latencies, &outcome.errors);
    let done = latencies.total();
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let rate = done as f64 / seconds;
    let megabytes = rate * size as f64 / 1e6;
    let micros = |nanos: u64| nanos as f64 / 1000.0;
    match reply {
        Reply::Http if new_connection => print_line(&format!(
            "{conns} connection slots (+{idle} idle), GET /hello, a new connection per request"
        )),
        Reply::Http => print_line(&format!(
            "{conns} connections (+{idle} idle), GET /hello, keep-alive"
        )),
        Reply::Echo if new_connection => print_line(&format!(
            "{conns} connection slots (+{idle} idle), {size}-byte messages, a new connection \
             per request"
        )),
        Reply::Echo | Reply::CtimeLine => print_line(&format!(
            "{conns} connections (+{idle} idle), {size}-byte messages"
        )),
    }
    print_line(&format!(
        "{done} round trips in {seconds:.3} s: {rate:.0} requests/s, {megabytes:.2} MB/s {}",
        match reply {
            Reply::Echo => "each way",
            Reply::CtimeLine | Reply::Http => "sent",
        }
    ));
    print_line(&format!(
        "latency: p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us",
        micros(latencies.percentile(0.50)),
        micros(latencies.percentile(0.99)),
        micros(latencies.percentile(0.999)),
        micros(latencies.max)
    ));
    // Left out of the latencies above, so the percentiles are lower bounds: the
    // requests the schedule wanted and no connection was free to send (coordinated
    // omission at the end of the run), and those that never got a reply.
    if outcome.not_sent > 0 {
        print_line(&format!(
            "not sent: {} requests due before the deadline, their connection still \
             waiting for an earlier reply (not in the latencies)",
            outcome.not_sent
        ));
    }
    if outcome.unanswered > 0 {
        print_line(&format!(
            "unanswered: {} requests without a reply {} s after the deadline (not in \
             the latencies)",
            outcome.unanswered,
            GRACE.as_secs()
        ));
    }
    // This client's own CPU time during the run: if it is close to the wall time of a
    // core per thread, the client, not the server, may be what limits the numbers.
    print_line(&format!(
        "client CPU: {cpu:.2} s in {seconds:.2} s ({:.0}% of a core)",
        cpu / seconds * 100.0
    ));
    print_line(&format!("errors: {}", errors.len()));
    for error in errors.iter().take(10) {
        print_line(&format!("error: {error}"));
    }
    // One line for programs (the runner) to read.
    print_line(&format!(
        "summary requests={done} seconds={seconds:.6} rps={rate:.1} p50_us={:.1} p99_us={:.1} p999_us={:.1} max_us={:.1} client_cpu={cpu:.3} errors={}",
        micros(latencies.percentile(0.50)),
        micros(latencies.percentile(0.99)),
        micros(latencies.percentile(0.999)),
        micros(latencies.max),
        errors.len()
    ));
}

/// User plus system CPU time of this process so far.
fn own_cpu_seconds() -> f64 {
    getrusage(UsageWho::RUSAGE_SELF)
        .map(|usage| {
            (usage.user_time().num_microseconds() + usage.system_time().num_microseconds()) as f64
                / 1e6
        })
        .unwrap_or(0.0)
}

// ANCHOR: drive
/// `--unix PATH`: an AF_UNIX stream connection instead of TCP (lesson 16 compares
/// the two); either way a socket2 `Socket`, on which the loop below makes the same
/// calls.
fn open(addr: SocketAddr, unix: Option<&std::path::Path>) -> io::Result<Socket> {
    match unix {
        Some(path) => Ok(Socket::from(OwnedFd::from(UnixStream::connect(path)?))),
        // A time limit on connect(2), as on every other wait: a server whose accept
        // queue is full leaves the SYN unanswered for about two minutes of retries.
        None => Ok(Socket::from(TcpStream::connect_timeout(&addr, STALL)?)),
    }
}

fn open_failed(
    addr: SocketAddr,
    unix: Option<&std::path::Path>,
    err: &io::Error,
    server: &str,
) -> String {
    match unix {
        Some(path) => format!(
            "cannot connect to {}: {err}; start it with: cargo run --bin 16_local_server \
             -- --path {}",
            path.display(),
            path.display()
        ),
        None => connect_failed(addr, err, server),
    }
}

/// TCP_NODELAY on a TCP connection (an AF_UNIX stream has no Nagle to turn off).
fn no_delay(stream: &Socket) -> io::Result<()> {
    match stream.domain()? {
        Domain::UNIX => Ok(()),
        _ => stream.set_tcp_nodelay(true),
    }
}

/// One thread's share: an epoll loop over its connections. Each connection writes its
/// message, reads the whole echo (checking every byte), records the latency, and
/// starts the next request. A connection is watched for reading only, and for writing
/// only while a message did not fit in the send buffer: the client must cost less per
/// request than the servers it measures.
fn drive(share: Vec<(usize, Socket)>, load: &Load) -> Outcome {
    let mut outcome = Outcome::default();
    let epoll = match Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC) {
        Ok(epoll) => epoll,
        Err(err) => {
            outcome.errors.push(format!("epoll_create1: {err}"));
            return outcome;
        }
    };
    let now = Instant::now();
    let mut conns: Vec<Conn> = Vec::with_capacity(share.len());
    for (number, stream) in share {
        let token = conns.len() as u64;
        let ready = stream
            .set_nonblocking(true)
            .and_then(|()| no_delay(&stream))
            .and_then(|()| Ok(epoll.add(&stream, EpollEvent::new(EpollFlags::EPOLLIN, token))?));
        if let Err(err) = ready {
            outcome.errors.push(format!("conn {number}: {err}"));
            continue;
        }
        conns.push(Conn {
            stream,
            number,
            request: 0,
            message: message(number, load),
            written: 0,
            echoed: 0,
            started: now,
            last_progress: now,
            writing: false,
            draining: false,
            done: false,
            line: [0; CTIME_LINE],
            http: [0; HTTP_REPLY_MAX],
            http_head: 0,
            http_size: HTTP_REPLY_MAX,
            wake: None,
        });
    }
    let mut buffer = vec![0u8; load.size.clamp(4096, 1 << 20)];
    let mut running = conns.len();
    // Open loop: the connections waiting for their time, soonest first.
    let mut wakeups = Wakeups::new();
    // Start every connection's first request.
    for (index, conn) in conns.iter_mut().enumerate() {
        next_request(conn, load.reply);
        advance(
            conn,
            index,
            &epoll,
            &mut buffer,
            load,
            &mut outcome,
            (&mut running, &mut wakeups),
            now,
        );
    }
    let mut events = vec![EpollEvent::empty(); 1024];
    let mut last_check = now;
    // Open loop: a timerfd(2) in the epoll set wakes the loop when the next request
    // is due, to the microsecond. (epoll_wait's own timeout counts in whole
    // milliseconds: a request would leave up to 1 ms late, and that would count in
    // its latency, more than the servers' whole round trip.)
    let timer = match load.rate.map(|_| open_timer(&epoll)).transpose() {
        Ok(timer) => timer,
        Err(err) => {
            outcome.errors.push(format!("timerfd: {err}"));
            return outcome;
        }
    };
    let mut armed_for: Option<Instant> = None;
    while running > 0 {
        let next_wake = wakeups.peek().map(|&Reverse((wake, _))| wake);
        if let (Some(timer), Some(wake)) = (&timer, next_wake)
            && armed_for != Some(wake)
        {
            // One-shot, relative; at least 1 ns (zero would disarm it).
            let left = wake
                .saturating_duration_since(Instant::now())
                .max(Duration::from_nanos(1));
            let when = Expiration::OneShot(TimeSpec::from_duration(left));
            if let Err(err) = timer.set(when, TimerSetTimeFlags::empty()) {
                outcome.errors.push(format!("timerfd_settime: {err}"));
                break;
            }
            armed_for = Some(wake);
        }
        // Wake at least once a second (the stall check), and at the end of the grace.
        let mut wait = Duration::from_secs(1);
        if let Some(end) = load.grace_end() {
            wait = wait.min(end.saturating_duration_since(Instant::now()));
        }
        let wait_ms = wait.as_micros().div_ceil(1000) as u16; // at most 1000
        let ready = match epoll.wait(&mut events, EpollTimeout::from(wait_ms)) {
            Ok(ready) => ready,
            Err(Errno::EINTR) => 0,
            Err(err) => {
                outcome.errors.push(format!("epoll_wait: {err}"));
                break;
            }
        };
        let now = Instant::now();
        for event in &events[..ready] {
            if event.data() == TIMER {
                // Read the expiry count, so the timer is not readable any more.
                if let Some(timer) = &timer {
                    let _ = nix::unistd::read(timer, &mut [0u8; 8]);
                }
                armed_for = None;
                continue;
            }
            let index = event.data() as usize;
            if index < conns.len() && !conns[index].done {
                advance(
                    &mut conns[index],
                    index,
                    &epoll,
                    &mut buffer,
                    load,
                    &mut outcome,
                    (&mut running, &mut wakeups),
                    now,
                );
            }
        }
        // Open loop: wake the connections whose time has come (a request is due, or
        // the deadline is here). Each new wake-up lies after `now`, so this ends.
        while let Some(&Reverse((wake, index))) = wakeups.peek()
            && wake <= now
        {
            wakeups.pop();
            // A connection that has since failed is left out.
            let conn = &mut conns[index];
            if !conn.done && conn.wake == Some(wake) {
                advance(
                    conn,
                    index,
                    &epoll,
                    &mut buffer,
                    load,
                    &mut outcome,
                    (&mut running, &mut wakeups),
                    now,
                );
            }
        }
        // The deadline and its grace are over: a request still without its reply is
        // unanswered, and the run ends (a stalled server, or a huge message still on
        // its way, must not hold it up to STALL, or for ever).
        if load.grace_end().is_some_and(|end| now >= end) {
            for conn in conns.iter_mut().filter(|conn| !conn.done) {
                if !conn.draining && conn.wake.is_none() {
                    outcome.unanswered += 1;
                }
                let _ = epoll.delete(&conn.stream);
                conn.done = true;
                running -= 1;
            }
        }
        if now.duration_since(last_check) >= Duration::from_secs(1) {
            last_check = now;
            for conn in conns.iter_mut().filter(|conn| !conn.done) {
                if now.duration_since(conn.last_progress) > STALL {
                    outcome.errors.push(format!(
                        "conn {}: no progress for {} s (request {}, {} of {} bytes echoed)",
                        conn.number,
                        STALL.as_secs(),
                        conn.request,
                        conn.echoed,
                        conn.message.len()
                    ));
                    // Out of the epoll set too: a late reply would wake us forever.
                    let _ = epoll.delete(&conn.stream);
                    conn.done = true;
                    running -= 1;
                }
            }
        }
    }
    // Open loop: the requests that were due before the deadline and not sent (each
    // connection sent `request` of them, and has one more on its way if it is
    // unanswered or failed).
    for conn in &conns {
        let attempted = conn.request + u64::from(conn.written > 0 && !conn.draining);
        outcome.not_sent += load
            .due_before_deadline(conn.number)
            .saturating_sub(attempted);
    }
    outcome
}

/// The epoll token of the open loop's timer (connections count up from 0).
const TIMER: u64 = u64::MAX;

/// Open loop: (wake-up time, connection index) of each connection waiting for its
/// time, soonest on top. `BinaryHeap` keeps the largest on top; `Reverse` turns it
/// round. Finding the next wake-up is then one look, and each push or pop is
/// O(log n): a thread may hold thousands of connections, and a scan of them all at
/// every wake-up would cost more than the requests it sends.
type Wakeups = BinaryHeap<Reverse<(Instant, usize)>>;

/// A non-blocking timerfd on CLOCK_MONOTONIC (the clock `Instant` reads), in `epoll`.
fn open_timer(epoll: &Epoll) -> io::Result<TimerFd> {
    let timer = TimerFd::new(
        ClockId::CLOCK_MONOTONIC,
        TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
    )?;
    epoll.add(&timer, EpollEvent::new(EpollFlags::EPOLLIN, TIMER))?;
    Ok(timer)
}

/// Moves one connection on. It is always watched for reading, and for writing too
/// only while a write is stuck: then the server may be waiting for us to read its
/// echo before it reads more of our message, so we must not wait for writing alone.
#[allow(clippy::too_many_arguments)]
fn advance(
    conn: &mut Conn,
    index: usize,
    epoll: &Epoll,
    buffer: &mut [u8],
    load: &Load,
    outcome: &mut Outcome,
    (running, wakeups): (&mut usize, &mut Wakeups),
    now: Instant,
) {
    let was_waiting_for = conn.wake;
    let result = step(conn, buffer, &mut outcome.latencies, load, now).and_then(|finished| {
        // Waiting for its time (open loop), a request is not being written.
        let writing = conn.written < conn.message.len() && !conn.draining && conn.wake.is_none();
        if !finished && writing != conn.writing {
            let flags = if writing {
                EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT
            } else {
                EpollFlags::EPOLLIN
            };
            epoll.modify(&conn.stream, &mut EpollEvent::new(flags, index as u64))?;
            conn.writing = writing;
        }
        Ok(finished)
    });
    let finished = match result {
        Ok(finished) => finished,
        Err(err) => {
            outcome.errors.push(format!("conn {}: {err}", conn.number));
            true
        }
    };
    if finished {
        let _ = epoll.delete(&conn.stream);
        conn.done = true;
        *running -= 1;
    } else if let Some(wake) = conn.wake
        && conn.wake != was_waiting_for
    {
        // It has begun to wait (open loop): one entry per wait.
        wakeups.push(Reverse((wake, index)));
    }
}
// ANCHOR_END: drive

fn next_request(conn: &mut Conn, reply: Reply) {
    if reply == Reply::Echo {
        let stamp = conn.request.to_le_bytes();
        let stamped = stamp.len().min(conn.message.len());
        conn.message[..stamped].copy_from_slice(&stamp[..stamped]);
    }
    conn.written = 0;
    conn.echoed = 0;
    conn.http_head = 0;
    conn.http_size = HTTP_REPLY_MAX;
}

// ANCHOR: step
/// Does what the socket allows; returns Ok(true) when this connection is done.
fn step(
    conn: &mut Conn,
    buffer: &mut [u8],
    latencies: &mut Histogram,
    load: &Load,
    now: Instant,
) -> io::Result<bool> {
    if conn.draining {
        return drain(conn, buffer);
    }
    loop {
        // Send what is left of the request. Its clock starts at its first byte.
        if conn.written < conn.message.len() {
            if conn.written == 0 {
                conn.started = Instant::now();
                if let Some(rate) = load.rate {
                    // Open loop: the run's requests are due one every 1/R seconds,
                    // dealt to the connections in turn, whether or not the server
                    // kept up: request n of connection k (of N) is due (n*N + k)/R
                    // seconds after the start. Not due yet: wait for it. Late: send
                    // now, and count the latency from when it was due, so that the
                    // time it waited behind a slow reply counts too (wrk2 does this).
                    let slot = conn.request as f64 * load.conns as f64 + conn.number as f64;
                    let due = load.started + Duration::from_secs_f64(slot / rate);
                    // Nothing is sent after the deadline, not even a request that
                    // was due before it (it counts as not sent). A request due after
                    // it: the connection waits for the deadline instead, and ends there.
                    if load
                        .deadline
                        .is_some_and(|deadline| conn.started >= deadline)
                    {
                        conn.wake = None;
                        return finish(conn, buffer);
                    }
                    let wake = load.deadline.map_or(due, |deadline| due.min(deadline));
                    if conn.started < wake {
                        if conn.wake.is_some() {
                            // Already waiting, and epoll says the socket is readable.
                            // Read: left unread, it would wake epoll_wait again and
                            // again until the due time (a busy loop).
                            read_while_waiting(conn, buffer)?;
                        }
                        conn.wake = Some(wake);
                        // Waiting for its time is not a stall.
                        conn.last_progress = wake;
                        return Ok(false);
                    }
                    conn.wake = None;
                    conn.started = due;
                }
            }
            while conn.written < conn.message.len() {
                match conn.stream.write(&conn.message[conn.written..]) {
                    Ok(n) => {
                        conn.written += n;
                        conn.last_progress = now;
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    Err(err) => return Err(err),
                }
            }
            if conn.written == conn.message.len() {
                // All sent: epoll says when the reply comes (a read now would
                // almost always find nothing yet: one wasted system call).
                return Ok(false);
            }
            // Stuck: read what has come back, so the server can go on.
        }
        // Read the reply as far as it has come. An echo cannot be longer than what
        // was sent so far; each byte is checked as it comes. An HTTP reply's length
        // is known once its head is in.
        while conn.echoed < can_come(conn, load.reply) {
            let want = (can_come(conn, load.reply) - conn.echoed).min(buffer.len());
            let n = match conn.stream.read(&mut buffer[..want]) {
                Ok(0) => return Err(closed_early(conn.request)),
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            let got = &buffer[..n];
            match load.reply {
                Reply::Echo if got != &conn.message[conn.echoed..conn.echoed + n] => {
                    let sent = &conn.message[conn.echoed..conn.echoed + n];
                    let first = got.iter().zip(sent).take_while(|(a, b)| a == b).count();
                    return Err(wrong_reply(format!(
                        "wrong bytes in the echo of request {} at offset {}",
                        conn.request,
                        conn.echoed + first
                    )));
                }
                Reply::Echo => {}
                Reply::CtimeLine => conn.line[conn.echoed..conn.echoed + n].copy_from_slice(got),
                Reply::Http => {
                    conn.http[conn.echoed..conn.echoed + n].copy_from_slice(got);
                    if conn.http_head == 0 {
                        let so_far = &conn.http[..conn.echoed + n];
                        let head = http_reply_head(so_far).map_err(|complaint| {
                            wrong_reply(format!("request {}: {complaint}", conn.request))
                        })?;
                        if let Some((head, body)) = head {
                            conn.http_head = head;
                            conn.http_size = head + body;
                        }
                    }
                }
            }
            conn.echoed += n;
            conn.last_progress = now;
        }
        let reply_size = match load.reply {
            Reply::Echo => conn.message.len(),
            Reply::CtimeLine => CTIME_LINE,
            Reply::Http => conn.http_size,
        };
        if conn.echoed < reply_size {
            return Ok(false); // the echo has caught up with a stuck write
        }
        match load.reply {
            Reply::CtimeLine => check_ctime_reply(conn)?,
            Reply::Http => check_http_reply(&conn.http[..conn.echoed], conn.http_head).map_err(
                |complaint| wrong_reply(format!("request {}: {complaint}", conn.request)),
            )?,
            Reply::Echo => {}
        }
        // A whole reply: record it, then send the next request at once.
        let finished = Instant::now();
        latencies.record(finished.duration_since(conn.started).as_nanos() as u64);
        conn.request += 1;
        let out_of_time = load.deadline.is_some_and(|deadline| finished >= deadline);
        if conn.request >= load.requests || out_of_time {
            return finish(conn, buffer);
        }
        next_request(conn, load.reply);
    }
}

/// No more requests: half-close, then read until the server closes (any byte is one
/// too many).
fn finish(conn: &mut Conn, buffer: &mut [u8]) -> io::Result<bool> {
    conn.stream.shutdown(Shutdown::Write)?;
    conn.draining = true;
    drain(conn, buffer)
}

/// Open loop, between a reply and the next request's time: nothing may come. A close
/// or stray bytes are an error now, named for what they follow (they are not the
/// next request's echo, which is not sent yet).
fn read_while_waiting(conn: &mut Conn, buffer: &mut [u8]) -> io::Result<()> {
    let after = match conn.request {
        0 => "before the first request".to_string(),
        n => format!("after the reply to request {}", n - 1),
    };
    loop {
        match conn.stream.read(buffer) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the server closed the connection {after}"),
                ));
            }
            Ok(n) => return Err(wrong_reply(format!("{n} unexpected bytes {after}"))),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        }
    }
}
// ANCHOR_END: step

/// How many bytes of the reply may have come by now: an echo is no longer than what
/// was sent; an HTTP reply is as long as its head says, or at most `HTTP_REPLY_MAX`
/// until its head is in.
fn can_come(conn: &Conn, reply: Reply) -> usize {
    match reply {
        Reply::Echo => conn.written,
        Reply::CtimeLine => CTIME_LINE,
        Reply::Http => conn.http_size,
    }
}

// ANCHOR: http_reply
/// The head of an HTTP/1.1 reply, once its `\r\n\r\n` is among `bytes`: the head's
/// length and the body's (its Content-Length). `None` while the head is incomplete.
/// Only what a load test must know is checked: the status is 200, and the length.
fn http_reply_head(bytes: &[u8]) -> Result<Option<(usize, usize)>, String> {
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        if bytes.len() >= HTTP_REPLY_MAX {
            return Err(format!(
                "no end of head in the first {HTTP_REPLY_MAX} bytes"
            ));
        }
        return Ok(None);
    };
    let head = &bytes[..end + 2]; // each line with its \r\n
    let mut lines = head.split(|&byte| byte == b'\n');
    let status = lines.next().unwrap_or_default();
    if !status.starts_with(b"HTTP/1.1 200 ") {
        return Err(format!(
            "the status line is not HTTP/1.1 200: {:?}",
            String::from_utf8_lossy(status.trim_ascii_end())
        ));
    }
    let mut length = None;
    for line in lines {
        let Some(colon) = line.iter().position(|&byte| byte == b':') else {
            continue;
        };
        if line[..colon].eq_ignore_ascii_case(b"content-length") {
            length = std::str::from_utf8(line[colon + 1..].trim_ascii())
                .ok()
                .and_then(|digits| digits.parse::<usize>().ok());
            if length.is_none() {
                return Err("a Content-Length that is not a number".into());
            }
        }
    }
    let Some(length) = length else {
        return Err("no Content-Length".into());
    };
    if end + 4 + length > HTTP_REPLY_MAX {
        return Err(format!("a reply longer than {HTTP_REPLY_MAX} bytes"));
    }
    Ok(Some((end + 4, length)))
}

/// A whole reply (`bytes`, whose head is `head` bytes long): the body must be lesson
/// 12's, and nothing may follow it.
fn check_http_reply(bytes: &[u8], head: usize) -> Result<(), String> {
    if head == 0 {
        return Err("the reply has no complete head".into());
    }
    if &bytes[head..] != HTTP_BODY {
        return Err(format!(
            "the body is not {:?}: {:?}",
            String::from_utf8_lossy(HTTP_BODY),
            String::from_utf8_lossy(&bytes[head..])
        ));
    }
    Ok(())
}
// ANCHOR_END: http_reply

// ANCHOR: new_connection
/// `--new-connection-per-request`: one connection slot, on this thread of its own, in
/// blocking calls: connect, send the request with `Connection: close`, read until the
/// server closes, check the reply, and again, until `--requests` or `--duration`.
/// The epoll loop above is built around connections that live for the whole run;
/// here a request's latency includes its connect and the close, which is the point.
fn drive_new_connections(number: usize, addr: SocketAddr, load: &Load) -> Outcome {
    let mut outcome = Outcome::default();
    let mut reply = [0u8; HTTP_REPLY_MAX];
    let mut request = 0;
    while request < load.requests {
        let started = Instant::now();
        if load.deadline.is_some_and(|deadline| started >= deadline) {
            break;
        }
        let limit = load.wait_limit(started);
        if let Err(err) = one_connection(addr, &mut reply, limit, load.grace_end()) {
            if unanswered_at_the_end(&err, load) {
                outcome.unanswered += 1;
                break;
            }
            outcome
                .errors
                .push(format!("conn {number}: request {request}: {err}"));
            break;
        }
        outcome
            .latencies
            .record(started.elapsed().as_nanos() as u64);
        request += 1;
    }
    outcome
}

/// A blocking call timed out at the end of the grace (not a stall): the request is
/// unanswered, not an error.
fn unanswered_at_the_end(err: &io::Error, load: &Load) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) && load.grace_end().is_some_and(|end| Instant::now() >= end)
}

/// One request on a connection of its own; the reply ends when the server closes.
/// Each call may wait `limit` at most: `STALL`, or less near the end of the grace;
/// and a reply that trickles in (a byte per call) ends at `grace_end` all the same.
fn one_connection(
    addr: SocketAddr,
    reply: &mut [u8; HTTP_REPLY_MAX],
    limit: Duration,
    grace_end: Option<Instant>,
) -> io::Result<()> {
    // connect(2) with a time limit: a server whose accept queue is full leaves the
    // SYN unanswered, and the kernel would retry it for about two minutes.
    let mut stream = TcpStream::connect_timeout(&addr, limit)?;
    stream.set_nodelay(true)?;
    // No progress for this long is an error, as in the epoll loop.
    stream.set_read_timeout(Some(limit))?;
    stream.set_write_timeout(Some(limit))?;
    stream.write_all(HTTP_REQUEST_CLOSE)?;
    let mut got = 0;
    loop {
        if got == reply.len() {
            return Err(wrong_reply(format!(
                "no close after {HTTP_REPLY_MAX} bytes of reply"
            )));
        }
        if grace_end.is_some_and(|end| Instant::now() >= end) {
            return Err(io::ErrorKind::TimedOut.into());
        }
        match stream.read(&mut reply[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        }
    }
    let (head, body) = http_reply_head(&reply[..got])
        .and_then(|head| head.ok_or_else(|| "the server closed before the end of the head".into()))
        .map_err(wrong_reply)?;
    if got < head + body {
        return Err(wrong_reply(format!(
            "the server closed after {} of {body} body bytes",
            got - head
        )));
    }
    check_http_reply(&reply[..got], head).map_err(wrong_reply)
}
// ANCHOR_END: new_connection

/// After the last reply: reads until EOF; a byte is an error (an extra reply).
fn drain(conn: &mut Conn, buffer: &mut [u8]) -> io::Result<bool> {
    loop {
        match conn.stream.read(buffer) {
            Ok(0) => return Ok(true),
            Ok(n) => {
                return Err(wrong_reply(format!(
                    "{n} unexpected bytes after the reply to the last request"
                )));
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        }
    }
}

fn check_ctime_reply(conn: &Conn) -> io::Result<()> {
    if !looks_like_ctime_line(&conn.line) {
        return Err(wrong_reply(format!(
            "request {}: the reply is not a ctime line: {:?}",
            conn.request,
            String::from_utf8_lossy(&conn.line)
        )));
    }
    if conn.written < conn.message.len() {
        return Err(wrong_reply(format!(
            "request {}: a reply came before the whole request was sent",
            conn.request
        )));
    }
    Ok(())
}

fn closed_early(request: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("the server closed the connection at request {request}"),
    )
}

fn wrong_reply(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// `Fri Dec  4 16:55:42 2026\r\n`: the separators where ctime puts them.
fn looks_like_ctime_line(line: &[u8; CTIME_LINE]) -> bool {
    let separators = [
        (3, b' '),
        (7, b' '),
        (10, b' '),
        (13, b':'),
        (16, b':'),
        (19, b' '),
    ];
    separators.iter().all(|&(at, byte)| line[at] == byte)
        && line[20..24].iter().all(u8::is_ascii_digit)
        && &line[24..] == b"\r\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_within_two_percent() {
        for value in [0u64, 1, 127, 128, 129, 1000, 65_537, 1_000_000, 123_456_789] {
            let index = Histogram::index(value);
            let low = Histogram::lower_bound(index);
            assert!(low <= value, "{value}: bucket starts at {low}");
            assert!(
                value - low <= value / 60 + 1,
                "{value}: bucket starts at {low}"
            );
            assert!(Histogram::lower_bound(index + 1) > value, "{value}");
        }
    }

    #[test]
    fn ctime_lines_are_recognised() {
        assert!(looks_like_ctime_line(b"Fri Dec  4 16:55:42 2026\r\n"));
        assert!(!looks_like_ctime_line(b"Fri Dec  4 16:55:42 2026\n\n"));
        assert!(!looks_like_ctime_line(b"abcdefghijklmnopqrstuvwxyz"));
    }

    #[test]
    fn ctime_messages_hold_one_line_end() {
        for size in [2, 3, 64, 65_536] {
            for number in [0, 1, 2, 37, 499] {
                let load = Load {
                    size,
                    requests: 1,
                    deadline: None,
                    reply: Reply::CtimeLine,
                    rate: None,
                    conns: 1,
                    started: Instant::now(),
                };
                let message = message(number, &load);
                let line_ends = message.windows(2).filter(|w| w == b"\r\n").count();
                assert_eq!(line_ends, 1, "size {size}, conn {number}");
                assert!(message.ends_with(b"\r\n"));
            }
        }
    }

    #[test]
    fn http_reply_heads() {
        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nHello WORD";
        assert_eq!(http_reply_head(reply), Ok(Some((39, 10))));
        assert_eq!(check_http_reply(reply, 39), Ok(()));
        assert_eq!(http_reply_head(&reply[..37]), Ok(None), "head not yet in");
        let not_found = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert!(http_reply_head(not_found).is_err());
        assert!(http_reply_head(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(http_reply_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(
            http_reply_head(&[b'a'; HTTP_REPLY_MAX]).is_err(),
            "no end of head"
        );
        assert!(check_http_reply(b"HTTP/1.1 200 OK\r\n\r\nHello WORM", 19).is_err());
    }

    #[test]
    fn percentiles_from_counts() {
        let mut histogram = Histogram::new();
        for value in 1..=1000u64 {
            histogram.record(value * 1000);
        }
        let p50 = histogram.percentile(0.5);
        assert!((490_000..=500_000).contains(&p50), "{p50}");
        let p99 = histogram.percentile(0.99);
        assert!((975_000..=990_000).contains(&p99), "{p99}");
        assert_eq!(histogram.percentile(1.0), 1_000_000);
        assert_eq!(histogram.max, 1_000_000);
        let mut other = Histogram::new();
        other.record(5);
        histogram.merge(&other);
        assert_eq!(histogram.total(), 1001);
    }
}
