//! Lesson 15, the server: one IPv6 socket that serves IPv4 clients too (dual stack).
//!
//! It listens on `::` (every address of the machine, IPv6 and IPv4) with the socket
//! option IPV6_V6ONLY off, so an IPv4 client arrives as a v4-mapped IPv6 address,
//! `::ffff:127.0.0.1`. Each client is greeted with how the server sees it, then
//! everything it sends is echoed. `--v6only` turns the option on: IPv4 clients are
//! then refused. Each connection has a thread of its own (lesson 06's model).
//!
//!   terminal 1: cargo run --bin 15_names_server
//!   terminal 2: cargo run --bin 15_names_client -- connect 127.0.0.1 10015 hello
//!   terminal 2: cargo run --bin 15_names_client -- connect ::1 10015 hello

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use workbook::cli::{Args, Cli};
use workbook::live::{LiveConnections, Registered};
use workbook::log::RateLimitedLog;
use workbook::{bind_failed, exit_with_error, log, show, signal};

const DEFAULT_PORT: u16 = 10015;
const READ_SIZE: usize = 64 * 1024;
/// How long live connections get to finish after Ctrl-C (the contract's second
/// must hold the grace, the joins and the last line).
const GRACE: Duration = Duration::from_millis(500);
/// After a failed accept(2) (EMFILE), wait this long before the next try.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// At most one `error: accept` line per this interval; the rest are counted.
const ACCEPT_ERROR_INTERVAL: Duration = Duration::from_secs(1);

fn main() {
    let args = Cli::new(
        "15_names_server",
        "Lesson 15: one IPv6 socket on :: that also serves IPv4 clients (IPV6_V6ONLY off); \
         greets each client with its address as the server sees it, then echoes.",
        DEFAULT_PORT,
    )
    .default_host("::")
    .switch(
        "--v6only",
        "set IPV6_V6ONLY: serve IPv6 clients only (IPv4 connections are refused)",
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
    let quiet = args.flag("--quiet");
    let v6only = args.flag("--v6only");
    let addr = ipv6_address(&args);
    let listener = Arc::new(open_dual_stack(addr, v6only));

    let connections = LiveConnections::new();
    // Ctrl-C, as in lesson 06: end every connection's input and wake accept(2). This
    // runs on the signal thread: no logging, no waiting.
    let for_signal = Arc::clone(&connections);
    let listener_for_signal = Arc::clone(&listener);
    signal::on_shutdown(move || {
        for_signal.begin_shutdown();
        let _ = socket2::SockRef::from(&*listener_for_signal).shutdown(Shutdown::Read);
    })
    .unwrap_or_else(|message| exit_with_error(&message));
    log::listening(listener.local_addr().unwrap_or(addr));
    if !quiet {
        log!("{}", describe_listener(&listener, addr));
    }

    let mut threads = Vec::new();
    accept_loop(&listener, &connections, max_threads, quiet, &mut threads);
    shut_down(&connections, threads);
}

// ANCHOR: address
/// `--host` as an IPv6 socket address. The socket is always AF_INET6, so an IPv4
/// address is written the way an IPv6 socket spells it, v4-mapped: 127.0.0.1 is
/// `::ffff:127.0.0.1` (the socket then takes IPv4 clients of that address only).
/// A name, or an address with a zone (`fe80::1%eth0`), is resolved first
/// (getaddrinfo, through std), which keeps the zone as the scope id.
fn ipv6_address(args: &Args) -> SocketAddr {
    let addr = match args.host.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, args.port),
        Err(_) => args
            .socket_addr()
            .unwrap_or_else(|message| exit_with_error(&message)),
    };
    match addr {
        SocketAddr::V6(_) => addr,
        SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
    }
}
// ANCHOR_END: address

// ANCHOR: open
/// socket(AF_INET6), IPV6_V6ONLY, SO_REUSEADDR, bind, listen: lesson 01's four steps,
/// with the one option this lesson is about. Cannot: an `error:` line, exit 1.
fn open_dual_stack(addr: SocketAddr, v6only: bool) -> TcpListener {
    let socket = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))
        .unwrap_or_else(|err| exit_with_error(&format!("cannot create an IPv6 socket: {err}")));
    // setsockopt(IPPROTO_IPV6, IPV6_V6ONLY): set it either way. Left alone, it takes
    // the machine's default (/proc/sys/net/ipv6/bindv6only: 0 on Linux, but 1 on
    // some systems, and always 1 on OpenBSD), and the server would change behaviour
    // from one machine to the next. It must be set before bind(2).
    if let Err(err) = socket.set_only_v6(v6only) {
        exit_with_error(&format!("cannot set IPV6_V6ONLY: {err}"));
    }
    if let Err(err) = socket.set_reuse_address(true) {
        exit_with_error(&format!("cannot set SO_REUSEADDR: {err}"));
    }
    if let Err(err) = socket.bind(&addr.into()) {
        let mapped = matches!(addr.ip(), IpAddr::V6(ip) if ip.to_ipv4_mapped().is_some());
        let mut message = bind_failed(addr, &err);
        if v6only && mapped {
            // EINVAL: an IPv6-only socket cannot have an IPv4 address.
            message.push_str("; an IPv4 address needs IPV6_V6ONLY off: drop --v6only");
        }
        exit_with_error(&message);
    }
    if let Err(err) = socket.listen(128) {
        exit_with_error(&format!("cannot listen on {addr}: {err}"));
    }
    TcpListener::from(socket)
}
// ANCHOR_END: open

/// The second log line: what the kernel says of IPV6_V6ONLY (getsockopt, not what we
/// asked for), so the reader sees which clients can come. Bound to a v4-mapped
/// address (`--host 127.0.0.1`) the option reads off, but no IPv6 client can come.
fn describe_listener(listener: &TcpListener, addr: SocketAddr) -> String {
    let mapped = match addr.ip() {
        IpAddr::V6(ip) => ip.to_ipv4_mapped(),
        IpAddr::V4(_) => None,
    };
    match (socket2::SockRef::from(listener).only_v6(), mapped) {
        (Ok(false), Some(v4)) => format!(
            "IPV6_V6ONLY is off, but the address is v4-mapped: IPv4 clients only (to {}), \
             IPv6 connections are refused",
            if v4.is_unspecified() {
                "any IPv4 address of this machine".to_string()
            } else {
                v4.to_string()
            }
        ),
        (Ok(false), None) => {
            "IPV6_V6ONLY is off: IPv4 clients are served too, as ::ffff:a.b.c.d".into()
        }
        (Ok(true), _) => {
            "IPV6_V6ONLY is on: IPv6 clients only, IPv4 connections are refused".into()
        }
        (Err(err), _) => format!("{} cannot read IPV6_V6ONLY: {err}", log::ERROR),
    }
}

// ANCHOR: greeting
/// How the server sees a client: the address accept(2) returned, in the greeting's
/// one line, `hello ADDRESS port PORT: WHO\n`.
fn greeting(peer: SocketAddr) -> String {
    format!(
        "hello {} port {}: {}\n",
        peer.ip(),
        peer.port(),
        who(peer.ip())
    )
}

/// An IPv4 client on an IPv6 socket has an IPv6 address like any other, in the
/// range ::ffff:0:0/96: its last four bytes are the IPv4 address.
fn who(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => format!("an IPv4 client ({v4}) on an IPv6 socket"),
            None => "an IPv6 client".to_string(),
        },
        // Not on this server's socket, which is IPv6; an AF_INET server would see this.
        IpAddr::V4(_) => "an IPv4 client".to_string(),
    }
}
// ANCHOR_END: greeting

/// Lesson 06's loop: accept while there is room for one more connection thread.
fn accept_loop(
    listener: &TcpListener,
    connections: &Arc<LiveConnections>,
    max_threads: usize,
    quiet: bool,
    threads: &mut Vec<JoinHandle<()>>,
) {
    let accept_errors = RateLimitedLog::new(ACCEPT_ERROR_INTERVAL);
    while connections.wait_for_room(max_threads) {
        // ANCHOR: accept
        // accept(2) fills in the client's address: a sockaddr_in6 here, whatever
        // the client's family, because the listening socket is AF_INET6.
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(_) if connections.is_stopping() => return,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                accept_errors.line(format!("{} accept: {err}", log::ERROR));
                thread::sleep(ACCEPT_RETRY_PAUSE);
                continue;
            }
        };
        // ANCHOR_END: accept
        threads.retain(|handle| !handle.is_finished());
        let stream = Arc::new(stream);
        let registered = connections.register(Some(Arc::clone(&stream)));
        let number = registered.number;
        if !quiet {
            log!(
                "{} {} -> {}: {}",
                log::CONNECTED,
                peer,
                stream
                    .local_addr()
                    .map_or("?".to_string(), |a| a.to_string()),
                who(peer.ip())
            );
        }
        let for_thread = Arc::clone(connections);
        let spawned = thread::Builder::new()
            .name(format!("conn-{number}"))
            .spawn(move || serve(&stream, peer, registered, &for_thread, quiet));
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(err) => log!(
                "{} cannot start a thread for conn-{number}: {err}",
                log::ERROR
            ),
        }
    }
}

/// One connection's thread: the greeting, then the echo. `registered` is held until
/// the end: dropping it takes the connection out of the registry.
fn serve(
    stream: &TcpStream,
    peer: SocketAddr,
    registered: Registered,
    connections: &LiveConnections,
    quiet: bool,
) {
    let peers = show::peers(stream);
    let served = (&*stream)
        .write_all(greeting(peer).as_bytes())
        .and_then(|()| echo(stream, &peers, quiet));
    if let Err(err) = served {
        log!("{} {peer}: {err}", log::ERROR);
    }
    drop(registered);
    if !quiet {
        log!("{} {peer} (live {})", log::DISCONNECTED, connections.live());
    }
}

// ANCHOR: echo
/// Bytes, echoed as they came. The server never decodes them: a character split
/// between two reads is only bytes here, and comes back whole.
fn echo(mut stream: &TcpStream, peers: &str, quiet: bool) -> io::Result<()> {
    let mut buffer = vec![0u8; READ_SIZE];
    loop {
        let n = match stream.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        if !quiet {
            log!(
                "{} {} from {peers}: {}",
                log::RECEIVED,
                show::count(n, "byte"),
                show::bytes(&buffer[..n])
            );
        }
        stream.write_all(&buffer[..n])?;
    }
}
// ANCHOR_END: echo

/// Stop: as lesson 06, a grace period for the echo in hand, then every thread joined.
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
