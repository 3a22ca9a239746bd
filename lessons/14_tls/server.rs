//! Lesson 14, the server: lesson 06's echo (a bounded thread per connection), over TLS.
//!
//! Each connection's thread first runs the TLS handshake (with a deadline, so that a
//! client that never speaks cannot hold a thread for ever), then echoes what it
//! decrypts, encrypted again. The socket calls are lesson 06's; what is new sits
//! between them and the data: a `rustls::ServerConnection`, which turns the bytes
//! read from the socket into plaintext and the plaintext to send into records.
//!
//! Without `--cert` and `--key` it makes (once) a local CA and a certificate for
//! localhost, and says where the CA is, so that a client can trust it.
//!
//!   terminal 1: cargo run --bin 14_tls_server
//!   terminal 2: cargo run --bin 14_tls_client -- --ca target/14_tls_certs/ca.pem hello

mod certs;

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rustls::{ServerConfig, ServerConnection};
use workbook::cli::Cli;
use workbook::listener::{self, Accept};
use workbook::live::{LiveConnections, Registered};
use workbook::log::RateLimitedLog;
use workbook::{exit_with_error, log, show, signal, tls};

const READ_SIZE: usize = 64 * 1024;
/// How long live connections get to finish after Ctrl-C (lesson 06's reasoning).
const GRACE: Duration = Duration::from_millis(500);
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(100);
const ACCEPT_ERROR_INTERVAL: Duration = Duration::from_secs(1);
/// How many of a non-TLS client's first bytes the log shows.
const SHOWN_FIRST_BYTES: usize = 48;
/// A non-TLS client's bytes are read (and dropped) before its socket is closed: at
/// most this many, until it pauses this long.
const DRAIN_LIMIT: usize = 64 * 1024;
const DRAIN_PAUSE: Duration = Duration::from_millis(200);

/// What a client that does not speak TLS sent: its first bytes, and how many in all.
struct Received {
    first: Vec<u8>,
    total: usize,
}

/// What each connection's thread needs to know.
struct Settings {
    config: Arc<ServerConfig>,
    handshake_timeout: Duration,
    quiet: bool,
}

fn main() {
    let args = Cli::new(
        "14_tls_server",
        "Lesson 14: the echo server over TLS (rustls), one thread per connection.",
        tls::DEFAULT_PORT,
    )
    .value(
        "--cert",
        "FILE",
        "the server's certificate chain, PEM (with --key); default: make a local CA",
    )
    .value(
        "--key",
        "FILE",
        "the certificate's private key, PEM (with --cert)",
    )
    .value(
        "--cert-dir",
        "DIR",
        "where the local CA and certificate are made and kept (default target/14_tls_certs)",
    )
    .value(
        "--handshake-timeout",
        "SECS",
        "close a connection whose TLS handshake is not done within SECS (default 10)",
    )
    .value(
        "--max-threads",
        "N",
        "at most N connection threads at once; more clients wait in the backlog (default 256)",
    )
    .switch("--quiet", "log only errors and the start and stop lines")
    .parse();
    let max_threads: usize = args.get_or("--max-threads", 256);
    if max_threads == 0 {
        args.usage_error("--max-threads must be at least 1");
    }
    let handshake_secs: f64 = args.get_or("--handshake-timeout", 10.0);
    if !(0.1..=3600.0).contains(&handshake_secs) {
        args.usage_error("--handshake-timeout must be 0.1 to 3600 seconds");
    }
    let given: (Option<String>, Option<String>) = (args.get("--cert"), args.get("--key"));
    let cert_dir = args
        .get::<String>("--cert-dir")
        .map(PathBuf::from)
        .unwrap_or_else(tls::default_cert_dir);
    let addr = args
        .socket_addr()
        .unwrap_or_else(|message| exit_with_error(&message));

    // The certificate first: a server that cannot prove who it is should not listen.
    let (config, made) = match given {
        (Some(cert), Some(key)) => (server_config(Path::new(&cert), Path::new(&key)), None),
        (None, None) => {
            let files = certs::ensure(&cert_dir).unwrap_or_else(|why| exit_with_error(&why));
            (server_config(&files.chain, &files.key), Some(files))
        }
        _ => args.usage_error("--cert and --key go together"),
    };
    let config = config.unwrap_or_else(|why| exit_with_error(&why));
    let settings = Arc::new(Settings {
        config,
        handshake_timeout: Duration::from_secs_f64(handshake_secs),
        quiet: args.flag("--quiet"),
    });

    let listener = Arc::new(listener::open(addr, 128, Accept::Blocking));
    let connections = LiveConnections::new();
    // Ctrl-C: lesson 06's, unchanged (end every connection's input, wake accept).
    let for_signal = Arc::clone(&connections);
    let listener_for_signal = Arc::clone(&listener);
    signal::on_shutdown(move || {
        for_signal.begin_shutdown();
        let _ = socket2::SockRef::from(&*listener_for_signal).shutdown(Shutdown::Read);
    })
    .unwrap_or_else(|message| exit_with_error(&message));
    let bound = listener.local_addr().unwrap_or(addr);
    log::listening(bound);
    // The CA's path, for a learner to trust it (not with --quiet, which keeps only
    // the first and last lines and errors).
    if let Some(files) = made.filter(|_| !settings.quiet) {
        let how = if files.made_now { "made now" } else { "reused" };
        log!("{} {} ({how})", tls::CA_CERTIFICATE, files.ca.display());
        log!(
            "trust it: cargo run --bin 14_tls_client -- --ca {} --port {} hello",
            files.ca.display(),
            bound.port()
        );
    }

    let mut threads = Vec::new();
    accept_loop(
        &listener,
        &connections,
        max_threads,
        &settings,
        &mut threads,
    );
    shut_down(&connections, threads);
}

// ANCHOR: config
/// The server's side of TLS: its certificate chain and the key that proves it owns
/// it. No client certificates asked for; TLS 1.3 and 1.2, rustls' safe defaults.
fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let chain = tls::load_certificates(cert)?;
    let key = tls::load_private_key(key)?;
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|err| format!("cannot use {} as the certificate: {err}", cert.display()))?;
    Ok(Arc::new(config))
}
// ANCHOR_END: config

/// Lesson 06's accept loop.
fn accept_loop(
    listener: &TcpListener,
    connections: &Arc<LiveConnections>,
    max_threads: usize,
    settings: &Arc<Settings>,
    threads: &mut Vec<JoinHandle<()>>,
) {
    let accept_errors = RateLimitedLog::new(ACCEPT_ERROR_INTERVAL);
    while connections.wait_for_room(max_threads) {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(_) if connections.is_stopping() => return,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                accept_errors.line(format!("{} accept: {err}", log::ERROR));
                thread::sleep(ACCEPT_RETRY_PAUSE);
                continue;
            }
        };
        threads.retain(|handle| !handle.is_finished());
        spawn_connection(stream, connections, settings, threads);
    }
}

/// Lesson 06's: register the socket (so Ctrl-C reaches it), then a thread for it.
fn spawn_connection(
    stream: TcpStream,
    connections: &Arc<LiveConnections>,
    settings: &Arc<Settings>,
    threads: &mut Vec<JoinHandle<()>>,
) {
    let peers = show::peers(&stream);
    // ANCHOR: nodelay
    // TCP_NODELAY: TLS writes a flight of records in more than one write (after the
    // handshake, session tickets; then the first echo). With Nagle's algorithm the
    // later small write waits for the ACK of the earlier one, which the client delays
    // by up to 40 ms (delayed ACK): measured, 59 instead of hundreds of handshakes/s.
    if let Err(err) = stream.set_nodelay(true) {
        log!("{} {peers}: TCP_NODELAY: {err}", log::ERROR);
    }
    // ANCHOR_END: nodelay
    let stream = Arc::new(stream);
    let registered = connections.register(Some(Arc::clone(&stream)));
    let number = registered.number;
    if !settings.quiet {
        log!(
            "{} {peers} (thread conn-{number}; live {}, total {number})",
            log::CONNECTED,
            registered.live_now
        );
    }
    let for_thread = Arc::clone(connections);
    let settings = Arc::clone(settings);
    let spawned = thread::Builder::new()
        .name(format!("conn-{number}"))
        .spawn(move || serve(&stream, registered, &for_thread, &settings, &peers));
    match spawned {
        Ok(handle) => threads.push(handle),
        Err(err) => log!(
            "{} cannot start a thread for conn-{number}: {err}",
            log::ERROR
        ),
    }
}

// ANCHOR: serve
/// The connection's thread: the handshake, then the echo, then the goodbye.
fn serve(
    stream: &TcpStream,
    registered: Registered,
    connections: &LiveConnections,
    settings: &Settings,
    peers: &str,
) {
    let how = match handshake(stream, settings) {
        Err(HandshakeEnd::NotTls(received)) => {
            // No alert either: a client that does not speak TLS could not read it.
            // `...` marks where the shown bytes stop.
            let cut = match received.total.saturating_sub(received.first.len()) {
                0 => String::new(),
                more => format!("... ({})", show::count(more, "more byte")),
            };
            log!(
                "{} {peers} sent {}{cut}; closing",
                tls::NOT_TLS,
                show::bytes(&received.first)
            );
            "not TLS".to_string()
        }
        Err(HandshakeEnd::TimedOut) => format!(
            "no TLS handshake within {:?}; closing",
            settings.handshake_timeout
        ),
        Err(HandshakeEnd::Closed) => "closed before the handshake was done".to_string(),
        Err(HandshakeEnd::Failed(why)) => {
            log!("{} {peers}: {why}", tls::HANDSHAKE_FAILED);
            "handshake failed".to_string()
        }
        Ok(mut tls) => {
            if !settings.quiet {
                log!("{} with {peers}: {}", tls::HANDSHAKE_DONE, describe(&tls));
            }
            match echo(stream, &mut tls, peers, settings.quiet) {
                Ok(ending) => goodbye(stream, &mut tls, ending, connections, peers),
                Err(err) => {
                    log!("{} {peers}: {err}", log::ERROR);
                    "error".to_string()
                }
            }
        }
    };
    let number = registered.number;
    drop(registered);
    if !settings.quiet {
        log!(
            "{} {peers}: {how} (thread conn-{number}; live {})",
            log::DISCONNECTED,
            connections.live()
        );
    }
}
// ANCHOR_END: serve

/// How a handshake can end other than in a session.
enum HandshakeEnd {
    /// The first bytes are not a TLS record (an HTTP request, a lesson 06 client...).
    NotTls(Received),
    TimedOut,
    Closed,
    /// rustls refused: a bad message, no common cipher suite, the client's alert...
    Failed(String),
}

// ANCHOR: handshake
/// Runs the TLS handshake with a deadline; returns the connection, ready for data.
fn handshake(stream: &TcpStream, settings: &Settings) -> Result<ServerConnection, HandshakeEnd> {
    let deadline = Instant::now() + settings.handshake_timeout;
    let timed = |left: Duration| {
        stream
            .set_read_timeout(Some(left))
            .and_then(|()| stream.set_write_timeout(Some(left)))
            .map_err(|err| HandshakeEnd::Failed(err.to_string()))
    };
    timed(settings.handshake_timeout)?;

    // Look before rustls does: recv(2) with MSG_PEEK returns the first bytes and
    // leaves them in the socket. A TLS client's first record is a handshake record,
    // content type 22 (0x16); anything else is someone who does not speak TLS.
    let mut first = [0u8; SHOWN_FIRST_BYTES];
    let n = loop {
        match stream.peek(&mut first) {
            Ok(n) => break n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(ending_of(err)),
        }
    };
    if n == 0 {
        return Err(HandshakeEnd::Closed);
    }
    if first[0] != 0x16 {
        return Err(HandshakeEnd::NotTls(drain(stream, n, deadline)));
    }

    let mut tls = ServerConnection::new(Arc::clone(&settings.config))
        .map_err(|err| HandshakeEnd::Failed(err.to_string()))?;
    let mut socket = stream;
    // The handshake, driven by hand: rustls' records out (ServerHello, certificate,
    // Finished; at the end the session tickets), the client's records in, until it
    // is done. Each read waits only for the time left: a client that sends one byte
    // now and then gets no new wait per byte, it is closed at the deadline.
    // (rustls' complete_io would loop over many reads, each with the full timeout.)
    loop {
        while tls.wants_write() {
            timed(left_until(deadline)?)?;
            tls.write_tls(&mut socket).map_err(ending_of)?;
        }
        if !tls.is_handshaking() {
            break;
        }
        timed(left_until(deadline)?)?;
        match tls.read_tls(&mut socket) {
            Ok(0) => return Err(HandshakeEnd::Closed),
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(ending_of(err)),
        }
        // rustls decrypts and checks what came; on an error it queues an alert
        // (why we refuse) for the client: send it, as far as the socket takes it.
        if let Err(err) = tls.process_new_packets() {
            let _ = tls.write_tls(&mut socket);
            return Err(HandshakeEnd::Failed(err.to_string()));
        }
    }
    // The echo has no deadline (lesson 06's echo has none either).
    stream
        .set_read_timeout(None)
        .and_then(|()| stream.set_write_timeout(None))
        .map_err(|err| HandshakeEnd::Failed(err.to_string()))?;
    Ok(tls)
}

/// The time left until `deadline`, or `TimedOut` when there is none.
fn left_until(deadline: Instant) -> Result<Duration, HandshakeEnd> {
    match deadline.saturating_duration_since(Instant::now()) {
        left if left.is_zero() => Err(HandshakeEnd::TimedOut),
        left => Ok(left),
    }
}

/// Reads what a client that does not speak TLS sent (the `peeked` bytes and what
/// follows, at most `DRAIN_LIMIT`, until it pauses for `DRAIN_PAUSE` or the
/// handshake's deadline), and keeps the first bytes for the log. close(2) on a
/// socket with unread data sends a reset (RST) instead of a FIN: an HTTP client
/// would report "connection reset" instead of an empty answer.
fn drain(mut stream: &TcpStream, peeked: usize, deadline: Instant) -> Received {
    let mut first = Vec::with_capacity(SHOWN_FIRST_BYTES);
    let mut total = 0;
    let mut buffer = [0u8; 4096];
    while total < DRAIN_LIMIT {
        let Ok(left) = left_until(deadline) else {
            break;
        };
        if stream
            .set_read_timeout(Some(left.min(DRAIN_PAUSE)))
            .is_err()
        {
            break;
        }
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                let keep = n.min(SHOWN_FIRST_BYTES - first.len());
                first.extend_from_slice(&buffer[..keep]);
                total += n;
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            // Quiet for DRAIN_PAUSE (or gone): what it had to say is read.
            Err(_) => break,
        }
    }
    Received {
        first,
        total: total.max(peeked),
    }
}
// ANCHOR_END: handshake

fn ending_of(err: io::Error) -> HandshakeEnd {
    match err.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => HandshakeEnd::TimedOut,
        io::ErrorKind::UnexpectedEof => HandshakeEnd::Closed,
        // complete_io wraps rustls' own errors as InvalidData; say the inner one.
        _ => HandshakeEnd::Failed(match err.get_ref() {
            Some(inner) => inner.to_string(),
            None => err.to_string(),
        }),
    }
}

/// `TLSv1_3, TLS13_AES_256_GCM_SHA384, server name localhost, full handshake`.
fn describe(tls: &ServerConnection) -> String {
    let version = tls
        .protocol_version()
        .map(|version| format!("{version:?}"))
        .unwrap_or_else(|| "?".into());
    let suite = tls
        .negotiated_cipher_suite()
        .map(|suite| format!("{:?}", suite.suite()))
        .unwrap_or_else(|| "?".into());
    // SNI: the name the client asked for. Clients send none when they dial an address.
    let name = match tls.server_name() {
        Some(name) => format!("server name {name}"),
        None => "no server name (SNI)".to_string(),
    };
    // Full (certificate sent, signed, verified) or resumed (a session ticket from an
    // earlier connection: no certificate, no signature).
    let kind = match tls.handshake_kind() {
        Some(rustls::HandshakeKind::Resumed) => "resumed session",
        Some(_) => "full handshake",
        None => "?",
    };
    format!("{version}, {suite}, {name}, {kind}")
}

/// How the client ended the session.
enum Ending {
    /// It sent close_notify: "I am done", authenticated, so nothing was cut off.
    CloseNotify,
    /// The connection ended without close_notify: an attacker (or a crash) may have
    /// cut the data short, and the receiver cannot tell.
    Truncated,
}

// ANCHOR: echo
/// Lesson 06's echo, through `rustls::Stream`: its read(2) reads records from the
/// socket and returns plaintext, its write encrypts and sends.
fn echo(
    mut socket: &TcpStream,
    tls: &mut ServerConnection,
    peers: &str,
    quiet: bool,
) -> io::Result<Ending> {
    let mut session = rustls::Stream::new(tls, &mut socket);
    let mut buffer = vec![0u8; READ_SIZE];
    loop {
        let n = match session.read(&mut buffer) {
            // rustls returns 0 only after a close_notify alert.
            Ok(0) => return Ok(Ending::CloseNotify),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            // The socket's end of input (FIN) came without close_notify.
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
                return Ok(Ending::Truncated);
            }
            Err(err) => return Err(err),
        };
        if !quiet {
            let data = show::bytes(&buffer[..n]);
            log!(
                "{} {} from {peers}: {data}",
                log::RECEIVED,
                show::count(n, "byte")
            );
        }
        // write_all hands the plaintext to rustls, which sends what fits in records;
        // flush sends the rest (and reports a failed send, which write may not).
        session.write_all(&buffer[..n])?;
        session.flush()?;
    }
}
// ANCHOR_END: echo

// ANCHOR: goodbye
/// The end of a session: answer the client's close_notify with ours, so that it
/// knows it got everything. On Ctrl-C (our reads were cut, so it looks like a
/// truncation) we say goodbye first.
fn goodbye(
    mut socket: &TcpStream,
    tls: &mut ServerConnection,
    ending: Ending,
    connections: &LiveConnections,
    peers: &str,
) -> String {
    let how = match ending {
        Ending::CloseNotify => "close_notify received, close_notify sent",
        Ending::Truncated if connections.is_stopping() => "server stopping, close_notify sent",
        Ending::Truncated => {
            log!(
                "{} {peers} closed the connection without close_notify: the data may \
                 have been cut short",
                tls::TRUNCATED
            );
            return "truncated session".to_string();
        }
    };
    tls.send_close_notify();
    while tls.wants_write() {
        if let Err(err) = tls.write_tls(&mut socket) {
            return format!("cannot send close_notify: {err}");
        }
    }
    how.to_string()
}
// ANCHOR_END: goodbye

/// Lesson 06's stop.
fn shut_down(connections: &LiveConnections, threads: Vec<JoinHandle<()>>) {
    let cut_off = connections.finish(GRACE);
    for handle in threads {
        let _ = handle.join();
    }
    let served = show::count(connections.total() as usize, "client");
    let cut_off = match cut_off {
        0 => String::new(),
        n => format!(
            ", {} cut off after the grace period",
            show::count(n, "client")
        ),
    };
    log::last_line(format!(
        "{}: served {served}{cut_off}, all threads joined",
        log::SHUTTING_DOWN
    ));
}
