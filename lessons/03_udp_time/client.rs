//! Lesson 03, the client: asks the UDP time server for the time and prints it.
//!
//! It sends one empty datagram and waits for the 4-byte reply. UDP may lose the
//! request or the reply without telling anyone, so the client waits at most
//! `--timeout-ms` for each try and sends again, up to `--retries` more times.
//!
//!   cargo run --bin 03_udp_time_client
//!   cargo run --bin 03_udp_time_client -- --timeout-ms 200 --retries 5

use std::io::{self, Write};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use workbook::cli::Cli;
use workbook::{exit_with_error, show, time};

const DEFAULT_PORT: u16 = 12345;
const SERVER_BIN: &str = "03_udp_time_server";
// ANCHOR: constants
/// How long to wait for a reply before sending again.
const DEFAULT_TIMEOUT_MS: u64 = 1000;
/// How many times to send again after a timeout: 3 means up to 4 tries in all.
const DEFAULT_RETRIES: u32 = 3;
/// Bigger than any datagram, so that a wrong-sized reply is seen as what it is. With a
/// 4-byte buffer, a 5-byte reply would be cut to 4 and look like a good one.
const MAX_DATAGRAM: usize = 65_536;
// ANCHOR_END: constants

/// A good reply: the server's clock, and how long it took to come.
struct Answer {
    seconds: u32,
    round_trip: Duration,
}

/// Why no good reply came.
enum Failure {
    /// The server's kernel said nothing is bound to the port (ECONNREFUSED), or
    /// every try timed out: the message to print.
    NoServer(String),
    /// Anything else the network or the OS reported.
    Other(String),
}

fn main() {
    let args = Cli::new(
        "03_udp_time_client",
        "Lesson 03: sends an empty datagram to the UDP time server and prints the time \
         in its 4-byte reply.",
        DEFAULT_PORT,
    )
    .value(
        "--timeout-ms",
        "MS",
        "how long to wait for each reply, in milliseconds (default 1000)",
    )
    .value(
        "--retries",
        "N",
        "how many times to send again when no reply came in time (default 3, so up to \
         4 tries in all; 0 = try once)",
    )
    .parse();
    let timeout_ms: u64 = args.get_or("--timeout-ms", DEFAULT_TIMEOUT_MS);
    if timeout_ms == 0 {
        args.usage_error("--timeout-ms must be at least 1");
    }
    let retries: u32 = args.get_or("--retries", DEFAULT_RETRIES);
    let addr = args
        .socket_addr()
        .unwrap_or_else(|message| exit_with_error(&message));

    let socket = open_socket(addr);

    match ask_time(&socket, addr, Duration::from_millis(timeout_ms), retries) {
        // ANCHOR: print
        // writeln! and not println!, which panics when stdout is closed
        // (`03_udp_time_client | head -0`): then nobody reads the answer, and there
        // is nothing left to do.
        Ok(answer) => {
            let _ = writeln!(
                io::stdout(),
                "{} (unix time {}; round trip {:.1} ms)",
                time::ctime_of_unix_seconds(i64::from(answer.seconds)),
                answer.seconds,
                answer.round_trip.as_secs_f64() * 1000.0
            );
        }
        // ANCHOR_END: print
        Err(Failure::NoServer(message)) => exit_with_error(&format!(
            "{message}; is the server running? start it with: cargo run --bin {SERVER_BIN}"
        )),
        Err(Failure::Other(message)) => exit_with_error(&message),
    }
}

/// The client's two steps: socket, then connect, which for UDP sends nothing.
fn open_socket(addr: SocketAddr) -> UdpSocket {
    // ANCHOR: client_steps
    // 1. socket(2): a UDP socket. Python: socket.socket(AF_INET, SOCK_DGRAM)
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .unwrap_or_else(|err| exit_with_error(&format!("cannot create a UDP socket: {err}")));

    // 2. connect(2) on a UDP socket sends no packet and makes no connection. It picks
    //    our address and an ephemeral port, and records the server's address, which
    //    buys three things: send() needs no address; the kernel drops every datagram
    //    that does not come from exactly that address and port, so nobody else can
    //    slip us a reply; and when the server's machine answers our datagram with an
    //    ICMP "port unreachable" (nothing bound there), our next recv() fails with
    //    ECONNREFUSED, instead of waiting for a reply that will never come.
    //    Python: s.connect((host, port))
    if let Err(err) = socket.connect(&addr.into()) {
        // Fails only for local reasons, e.g. ENETUNREACH when no route leads there.
        exit_with_error(&format!("cannot send to {addr}: {err}"));
    }
    // ANCHOR_END: client_steps
    UdpSocket::from(socket)
}

/// Sends an empty datagram and waits for a 4-byte reply, up to `1 + retries` times.
fn ask_time(
    socket: &UdpSocket,
    addr: SocketAddr,
    timeout: Duration,
    retries: u32,
) -> Result<Answer, Failure> {
    let tries = retries.saturating_add(1);
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    // ANCHOR: tries
    for attempt in 1..=tries {
        // send(2) of an empty datagram: 8 bytes of UDP header and no payload is a
        // complete message, and the server answers it. Python: s.send(b'')
        let sent_at = Instant::now();
        send_request(socket, addr)?;

        // Wait for a good reply until this try's deadline. A bad reply does not mean
        // our request was lost, so it does not end the try: the good one may follow.
        let deadline = sent_at + timeout;
        while let Some(left) = time_left(deadline) {
            match receive(socket, &mut buffer, left) {
                Ok(size) => match <[u8; 4]>::try_from(&buffer[..size]) {
                    // ntohl(), Python's struct.unpack('!I', data)[0]: the first byte
                    // is the most significant.
                    Ok(bytes) => {
                        return Ok(Answer {
                            seconds: u32::from_be_bytes(bytes),
                            round_trip: sent_at.elapsed(),
                        });
                    }
                    Err(_) => {
                        let _ = writeln!(
                            io::stderr(),
                            "ignored a reply of {} from {addr}: {} (a time is exactly 4 bytes)",
                            show::count(size, "byte"),
                            show::bytes(&buffer[..size])
                        );
                    }
                },
                // EINTR. With a timeout set, Linux does not restart recv after a stop
                // (Ctrl-Z, then fg): wait again, for what is left of this try.
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                // SO_RCVTIMEO expired: EAGAIN, which Rust calls WouldBlock.
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(err) => return Err(failure(addr, err)),
            }
        }
        if attempt < tries {
            let _ = writeln!(
                io::stderr(),
                "no reply from {addr} within {} ms (try {attempt} of {tries}); sending again",
                timeout.as_millis()
            );
        }
    }
    let tries = if tries == 1 {
        "1 try".to_string()
    } else {
        format!("{tries} tries")
    };
    Err(Failure::NoServer(format!(
        "no reply from {addr} to {tries}, each given {} ms (the datagrams were lost, \
         or nothing answers there)",
        timeout.as_millis()
    )))
    // ANCHOR_END: tries
}

/// Sends the empty request, trying again if a signal interrupts the call.
fn send_request(socket: &UdpSocket, addr: SocketAddr) -> Result<(), Failure> {
    loop {
        match socket.send(&[]) {
            Ok(_) => return Ok(()),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            // An ICMP error for an earlier try may be reported here instead of by recv.
            Err(err) => return Err(failure(addr, err)),
        }
    }
}

/// Waits up to `left` for one datagram from the server; returns its size.
fn receive(socket: &UdpSocket, buffer: &mut [u8], left: Duration) -> io::Result<usize> {
    // ANCHOR: receive
    // SO_RCVTIMEO: recv() gives up after `left` with EAGAIN instead of waiting forever.
    // Python: s.setsockopt(SOL_SOCKET, SO_RCVTIMEO, struct.pack('ll', secs, usecs)).
    // (Its s.settimeout(seconds) gets the same result another way: a non-blocking
    // socket, and poll(2) before each call, which raises TimeoutError.)
    socket.set_read_timeout(Some(left))?;
    // recv(2) on a connected UDP socket: the next datagram from the server, whole (or
    // cut to the buffer's size). Python: data = s.recv(65536)
    socket.recv(buffer)
    // ANCHOR_END: receive
}

/// How long until `deadline`, or `None` once it has passed.
fn time_left(deadline: Instant) -> Option<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    (!left.is_zero()).then_some(left)
}

/// Sorts an error of send or recv: ECONNREFUSED means no server.
fn failure(addr: SocketAddr, err: io::Error) -> Failure {
    if err.kind() == io::ErrorKind::ConnectionRefused {
        // The kernel's name for an ICMP "port unreachable" on a connected UDP socket.
        Failure::NoServer(format!("no server at {addr}: {err}"))
    } else {
        Failure::Other(format!("talking to {addr}: {err}"))
    }
}
