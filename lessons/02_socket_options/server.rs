//! Lesson 02, the server: the "I get it!" echo server, with its socket options on flags.
//!
//! Every chunk a client sends comes back unchanged, followed by `\nI get it!\n`. When
//! the client half-closes (it will send no more), the server closes the connection.
//! Before `bind` and `listen` the server sets the options the flags ask for, one
//! setsockopt(2) each, then prints the options of its listening socket, and for each
//! connection the options that differ from the listener's.
//!
//!   terminal 1: cargo run --bin 02_socket_options_server -- --nodelay --rcvbuf 20000
//!   terminal 2: cargo run --bin 02_socket_options_client -- hello
//!   anywhere:   cargo run --bin 02_socket_options_server -- --list-options

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use workbook::cli::Cli;
use workbook::options::{self, InterfaceName, OptionValue};
use workbook::{bind_failed, exit_with_error, log, show, signal};

const DEFAULT_PORT: u16 = 12345;
// ANCHOR: constants
/// How many finished handshakes the kernel may queue while we serve a client.
const BACKLOG: i32 = 5;
/// The most one recv(2) takes; a client's message may arrive in several chunks.
const CHUNK_SIZE: usize = 4096;
/// Sent after every chunk echoed: what the Python tutorial's server answers.
const I_GET_IT: &[u8] = b"\nI get it!\n";
// ANCHOR_END: constants

// ANCHOR: settings
/// The options the command line asks for. All are read before any socket exists, so
/// a bad value is a usage error (exit 2) and nothing has happened yet.
struct Settings {
    reuse_address: bool,
    nodelay: bool,
    keepalive: bool,
    recv_buffer: Option<u32>,
    send_buffer: Option<u32>,
    linger_seconds: Option<u16>,
    device: Option<InterfaceName>,
}
// ANCHOR_END: settings

fn main() {
    let args = Cli::new(
        "02_socket_options_server",
        "Lesson 02: an echo server that answers each chunk with the chunk and \
         `\\nI get it!\\n`, closes after the client half-closes, and shows its socket options.",
        DEFAULT_PORT,
    )
    .switch(
        "--no-reuseaddr",
        "leave SO_REUSEADDR off (on by default): a restart then fails while old \
         connections are in TIME_WAIT",
    )
    .switch(
        "--nodelay",
        "set TCP_NODELAY: send small writes at once (no Nagle)",
    )
    .switch(
        "--keepalive",
        "set SO_KEEPALIVE: probe connections that stay idle",
    )
    .value("--rcvbuf", "BYTES", "set SO_RCVBUF (the kernel doubles it)")
    .value("--sndbuf", "BYTES", "set SO_SNDBUF (the kernel doubles it)")
    .value(
        "--linger",
        "SECS",
        "set SO_LINGER: close() waits up to SECS (0 to 65535) for unsent data; 0 resets",
    )
    .value(
        "--device",
        "IFACE",
        "set SO_BINDTODEVICE: use only interface IFACE, e.g. lo",
    )
    .switch(
        "--list-options",
        "print every known option on a fresh TCP and a fresh UDP socket, and exit",
    )
    .switch("--quiet", "log only errors and the start and stop lines")
    .parse();
    let settings = Settings {
        reuse_address: !args.flag("--no-reuseaddr"),
        nodelay: args.flag("--nodelay"),
        keepalive: args.flag("--keepalive"),
        recv_buffer: args.get("--rcvbuf"),
        send_buffer: args.get("--sndbuf"),
        linger_seconds: args.get("--linger"),
        device: args.get("--device"),
    };
    let quiet = args.flag("--quiet");
    let addr = args
        .socket_addr()
        .unwrap_or_else(|message| exit_with_error(&message));

    if args.flag("--list-options") {
        list_options(Domain::for_address(addr));
        return;
    }

    let listener = open_listener(addr, &settings);

    // ANCHOR: shutdown
    // As in lesson 01: the handler only shuts down the listener and the client being
    // served, which wakes the main thread; main then logs the last line itself, after
    // everything else it logged (a table, say).
    let wake = signal::WakeOnShutdown::install(&listener)
        .unwrap_or_else(|message| exit_with_error(&message));
    // ANCHOR_END: shutdown

    let bound = match listener.local_addr().map(|a| a.as_socket()) {
        Ok(Some(bound)) => bound,
        _ => addr,
    };
    log::listening(bound);

    // ANCHOR: show_listener
    // getsockopt(2) for every option we know, once: the short table is logged now,
    // the full one is what each connection is compared with.
    // Python: s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF), once per option.
    let listening_options = options::read_options(&listener, false);
    if !quiet {
        log!("options of the listening socket:");
        log_lines(&options::option_table(&options::read_options(
            &listener, true,
        )));
    }
    // ANCHOR_END: show_listener

    // ANCHOR: accept_loop
    let mut served = 0;
    loop {
        let (connection, _) = match listener.accept() {
            Ok(accepted) => accepted,
            // Ctrl-C: the handler shut the listener down, and accept failed.
            Err(_) if wake.stopping() => break,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                // E.g. EMFILE or ECONNABORTED: this client is lost, the server goes on.
                // The pause keeps an error that repeats at once from spinning a core.
                log!("{} accept failed: {err}", log::ERROR);
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        // Shared with the Ctrl-C handler, which may need to shut it down.
        let stream = Arc::new(TcpStream::from(connection));
        if !wake.client_arrived(&stream) {
            break;
        }
        served += 1;
        let peers = show::peers(&stream);
        if !quiet {
            log!("{} {peers}", log::CONNECTED);
            log_inherited_options(&listening_options, &stream);
        }
        // One client at a time, as in lesson 01: the point here is the options.
        match serve(&stream, quiet, &peers) {
            Ok(()) if !quiet => log!("{} {peers}", log::DISCONNECTED),
            Ok(()) => {}
            // A reset or a failed write ends this client only, never the server.
            Err(err) => log!("{} {peers}: {err}", log::DISCONNECTED),
        }
        wake.client_left();
    }
    log::last_line(format!(
        "{}: served {}",
        log::SHUTTING_DOWN,
        show::count(served, "client")
    ));
    // ANCHOR_END: accept_loop
}

/// socket, setsockopt (once per option), bind, listen: the four steps of lesson 01,
/// with step 2 now doing what the flags ask.
fn open_listener(addr: SocketAddr, settings: &Settings) -> Socket {
    // ANCHOR: server_steps
    // 1. socket(2). Python: s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    let listener = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .unwrap_or_else(|err| exit_with_error(&format!("cannot create a TCP socket: {err}")));

    // 2. setsockopt(2), before bind and listen (see set_options for why).
    set_options(&listener, settings);

    // 3. bind(2): with SO_REUSEADDR off, this is where a port held by connections in
    //    TIME_WAIT fails with EADDRINUSE. Python: s.bind((host, port))
    if let Err(err) = listener.bind(&addr.into()) {
        exit_with_error(&bind_failed(addr, &err));
    }

    // 4. listen(2). Python: s.listen(5)
    if let Err(err) = listener.listen(BACKLOG) {
        exit_with_error(&format!("cannot listen on {addr}: {err}"));
    }
    // ANCHOR_END: server_steps
    listener
}

/// One setsockopt(2) per option the flags ask for. Each is set on the listening
/// socket before bind and listen: SO_REUSEADDR and SO_BINDTODEVICE change what bind
/// allows, the buffer sizes decide the window scale offered in the handshake, and
/// every connection accept(2) returns starts with a copy of the listener's options.
fn set_options(socket: &Socket, settings: &Settings) {
    // ANCHOR: reuseaddr
    // SO_REUSEADDR, level SOL_SOCKET: let bind(2) take a port that connections of an
    // earlier run still hold in TIME_WAIT (a port with a listening socket stays taken).
    // On by default here, as in every server; --no-reuseaddr shows why.
    // C: setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one)
    // Python: s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    let reuse = settings.reuse_address;
    if let Err(err) = socket.set_reuse_address(reuse) {
        exit_with_error(&options::set_failed(
            "SO_REUSEADDR",
            &reuse.to_string(),
            &err,
        ));
    }
    // ANCHOR_END: reuseaddr

    // ANCHOR: nodelay
    // TCP_NODELAY, level IPPROTO_TCP: turn off Nagle's algorithm, which holds a small
    // segment back while an earlier one is unacknowledged, to send fewer packets. We
    // write each echo as two small writes; with Nagle the second may wait for an ACK.
    // Python: s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if settings.nodelay {
        if let Err(err) = socket.set_tcp_nodelay(true) {
            exit_with_error(&options::set_failed("TCP_NODELAY", "true", &err));
        }
    }
    // ANCHOR_END: nodelay

    // ANCHOR: keepalive
    // SO_KEEPALIVE, level SOL_SOCKET: when a connection has been idle for a while
    // (TCP_KEEPIDLE, 2 hours by default), the kernel sends probes; a peer that has
    // vanished (crashed, unplugged) then shows up as an error instead of never.
    // Python: s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if settings.keepalive {
        if let Err(err) = socket.set_keepalive(true) {
            exit_with_error(&options::set_failed("SO_KEEPALIVE", "true", &err));
        }
    }
    // ANCHOR_END: keepalive

    // ANCHOR: buffers
    // SO_RCVBUF and SO_SNDBUF, level SOL_SOCKET: the kernel's receive and send buffer
    // for this socket. Linux doubles the value (the extra half is for its own
    // bookkeeping), caps it at net.core.rmem_max / wmem_max, and stops tuning the
    // size by itself. Python: s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, n)
    if let Some(bytes) = settings.recv_buffer {
        if let Err(err) = socket.set_recv_buffer_size(bytes as usize) {
            exit_with_error(&options::set_failed("SO_RCVBUF", &bytes.to_string(), &err));
        }
    }
    if let Some(bytes) = settings.send_buffer {
        if let Err(err) = socket.set_send_buffer_size(bytes as usize) {
            exit_with_error(&options::set_failed("SO_SNDBUF", &bytes.to_string(), &err));
        }
    }
    // ANCHOR_END: buffers

    // ANCHOR: linger
    // SO_LINGER, level SOL_SOCKET: by default close(2) returns at once and the kernel
    // sends what is left in the background. With linger on, close waits up to SECS
    // for it to be sent and acknowledged; with 0 it discards it and sends a reset.
    // Python: s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, secs))
    if let Some(seconds) = settings.linger_seconds {
        let linger = Some(Duration::from_secs(u64::from(seconds)));
        if let Err(err) = socket.set_linger(linger) {
            exit_with_error(&options::set_failed(
                "SO_LINGER",
                &format!("{seconds} s"),
                &err,
            ));
        }
    }
    // ANCHOR_END: linger

    // ANCHOR: device
    // SO_BINDTODEVICE, level SOL_SOCKET: only packets that come in through this
    // interface reach the socket, and what it sends leaves through it, whatever the
    // routing table says. Needs CAP_NET_RAW, except on Linux 5.7 and later.
    // Python: s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b'lo')
    if let Some(device) = &settings.device {
        if let Err(err) = socket.bind_device(Some(device.as_bytes())) {
            exit_with_error(&options::set_failed(
                "SO_BINDTODEVICE",
                device.as_str(),
                &err,
            ));
        }
    }
    // ANCHOR_END: device
}

/// Logs the options of a new connection that differ from the listening socket's.
fn log_inherited_options(listening: &[OptionValue], connection: &TcpStream) {
    // ANCHOR: inherited
    // accept(2) makes a new socket that starts as a copy of the listener: the options
    // set above carry over. What differs is what a connection has and a listener has
    // not: it is not accepting (SO_ACCEPTCONN), it knows its peer's segment size and
    // path MTU, and the kernel may have sized its buffers for this connection.
    let now = options::read_options(connection, false);
    let changed = options::differences(listening, &now);
    if !changed.is_empty() {
        log!("  options that differ from the listening socket:");
        log_lines(&options::differences_table(
            &changed,
            "listening",
            "connection",
            "  ",
        ));
    }
    // ANCHOR_END: inherited
}

/// Logs a table one line at a time.
fn log_lines(table: &str) {
    for line in table.lines() {
        log!("{line}");
    }
}

/// Echoes every chunk of one client, each followed by "\nI get it!\n", until the client
/// half-closes; then returns, and dropping the stream closes the connection.
fn serve(mut stream: &TcpStream, quiet: bool, peers: &str) -> io::Result<()> {
    // ANCHOR: serve
    let mut chunk = [0u8; CHUNK_SIZE];
    loop {
        let received = match stream.read(&mut chunk) {
            // 0 bytes: the client shut down its sending side (Python: s.shutdown(1))
            // or closed. It will send nothing more, so we are done; our close(2)
            // tells the client that the reply is complete.
            Ok(0) => return Ok(()),
            Ok(n) => &chunk[..n],
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        if !quiet {
            log!(
                "{} {} from {peers}: {}",
                log::RECEIVED,
                show::count(received.len(), "byte"),
                show::bytes(received)
            );
        }
        // Two writes, as in the Python tutorial (sendall twice). Without TCP_NODELAY,
        // Nagle's algorithm may hold the second one until the first is acknowledged.
        stream.write_all(received)?;
        stream.write_all(I_GET_IT)?;
    }
    // ANCHOR_END: serve
}

/// `--list-options`: every option the table knows, on a fresh TCP and UDP socket.
fn list_options(domain: Domain) {
    // ANCHOR: list_options
    // Two new sockets, never bound or connected: what the kernel gives every socket
    // of each kind. An option one kind does not have shows the kernel's error, e.g.
    // TCP_NODELAY on UDP: getsockopt(2) fails with ENOPROTOOPT.
    // Python: [x for x in dir(socket) if x.startswith('SO_')] lists names, not values.
    let tcp = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))
        .unwrap_or_else(|err| exit_with_error(&format!("cannot create a TCP socket: {err}")));
    let udp = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))
        .unwrap_or_else(|err| exit_with_error(&format!("cannot create a UDP socket: {err}")));
    let on_tcp = options::read_options(&tcp, false);
    let on_udp = options::read_options(&udp, false);
    let table = options::comparison_table(&[("tcp", &on_tcp), ("udp", &on_udp)]);
    // ANCHOR_END: list_options
    // write_all rather than print!, which would panic if stdout is a closed pipe.
    if let Err(err) = io::stdout().write_all(table.as_bytes()) {
        exit_with_error(&format!("cannot write to stdout: {err}"));
    }
}
