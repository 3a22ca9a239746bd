//! Lesson 10, the client: sends each line to the socketserver lesson's server and prints
//! what comes back.
//!
//! TCP (the default): one connection; each message goes out followed by `\r\n`, and the
//! reply, the server's time, is printed. `--hold SECS` first keeps the connection open
//! and idle, to show which of the server's modes serves somebody else meanwhile.
//!
//! `--udp`: each message is one datagram, and the reply `[<ctime>] <message>` is
//! printed. UDP may lose either, so the client waits `--timeout-ms` and sends again, up
//! to `--retries` times (lesson 03). A message too long for the 27 bytes of
//! `[<ctime>] ` in front comes back cut to the largest datagram.
//!
//!   cargo run --bin 10_socketserver_client -- hello "how are you"
//!   cargo run --bin 10_socketserver_client -- --udp hello

use std::io::{self, BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use workbook::cli::Cli;
use workbook::{connect_failed, exit_on_stdout_error, exit_with_error, show};

const DEFAULT_PORT: u16 = 10010;
const SERVER_BIN: &str = "10_socketserver_server";
/// What to start when no UDP server answers.
const UDP_SERVER_BIN: &str = "10_socketserver_server -- --udp";
const DEFAULT_TIMEOUT_MS: u64 = 1000;
const DEFAULT_RETRIES: u32 = 3;
/// Bigger than any datagram: a reply is never cut.
const MAX_DATAGRAM: usize = 65_536;
/// The largest UDP payload over IPv4 (65,535 less the IP and UDP headers) and over
/// IPv6 (whose header is not counted in its 65,535): the server cuts a longer reply.
const MAX_IPV4_DATAGRAM: usize = 65_507;
const MAX_IPV6_DATAGRAM: usize = 65_527;

fn main() {
    let args = Cli::new(
        "10_socketserver_client",
        "Lesson 10: sends each line to the socketserver lesson's server: over TCP each \
         line ends with \\r\\n and the server's time comes back; with --udp each line is a \
         datagram and `[<ctime>] <line>` comes back.",
        DEFAULT_PORT,
    )
    .switch("--udp", "send each message as a UDP datagram")
    .value(
        "--hold",
        "SECS",
        "TCP: keep the connection open and idle this long before sending (default 0)",
    )
    .value(
        "--timeout-ms",
        "MS",
        "UDP: how long to wait for each reply, in milliseconds (default 1000)",
    )
    .value(
        "--retries",
        "N",
        "UDP: how many times to send again when no reply came in time (default 3)",
    )
    .positional(
        "MESSAGE",
        "lines to send; without any, lines are read from stdin until an empty line or EOF",
    )
    .parse();
    let udp = args.flag("--udp");
    let hold: f64 = args.get_or("--hold", 0.0);
    if !(0.0..=86_400.0).contains(&hold) {
        args.usage_error("--hold must be 0 to 86400 seconds");
    }
    let timeout_ms: u64 = args.get_or("--timeout-ms", DEFAULT_TIMEOUT_MS);
    if timeout_ms == 0 {
        args.usage_error("--timeout-ms must be at least 1");
    }
    let retries: u32 = args.get_or("--retries", DEFAULT_RETRIES);
    if udp && hold > 0.0 {
        args.usage_error("--hold is for TCP: UDP has no connection to hold");
    }
    let addr = args
        .socket_addr()
        .unwrap_or_else(|message| exit_with_error(&message));

    let outcome = if udp {
        let timeout = Duration::from_millis(timeout_ms);
        let socket = open_udp(addr);
        args.each_message(|message| {
            let reply = ask(&socket, message, timeout, retries)?;
            print_line(&reply)
        })
    } else {
        let stream = TcpStream::connect(addr)
            .unwrap_or_else(|err| exit_with_error(&connect_failed(addr, &err, SERVER_BIN)));
        if hold > 0.0 {
            let note = format!("connected to {addr}; holding the connection idle for {hold} s");
            let _ = print_line(note.as_bytes());
            std::thread::sleep(Duration::from_secs_f64(hold));
        }
        let mut reader = BufReader::new(&stream);
        args.each_message(|message| exchange(&stream, &mut reader, message))
    };
    if let Err(err) = outcome {
        if udp && err.kind() == io::ErrorKind::ConnectionRefused {
            // An ICMP "port unreachable" came back: nothing is bound to that UDP port.
            exit_with_error(&connect_failed(addr, &err, UDP_SERVER_BIN));
        }
        exit_with_error(&format!("talking to {addr}: {err}"));
    }
    // Dropping the stream closes the connection: the server's handler reads EOF.
}

// ANCHOR: exchange
/// Sends one message and `\r\n`, then prints one reply line per `\r\n` sent.
fn exchange(
    mut stream: &TcpStream,
    reader: &mut BufReader<&TcpStream>,
    message: &[u8],
) -> io::Result<()> {
    let mut request = message.to_vec();
    request.extend_from_slice(b"\r\n");
    stream.write_all(&request)?;
    // A message given as an argument may hold `\r\n` of its own: each one is answered.
    let line_ends = request.windows(2).filter(|pair| pair == b"\r\n").count();
    for _ in 0..line_ends {
        let mut line = Vec::new();
        reader.read_until(b'\n', &mut line)?;
        let Some(time) = line.strip_suffix(b"\r\n") else {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        };
        print_line(time)?;
    }
    Ok(())
}
// ANCHOR_END: exchange

/// Prints one line of bytes. A closed stdout (`client | head -1`) is not a network
/// error: the client stops there, quietly.
fn print_line(bytes: &[u8]) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    let written = stdout
        .write_all(bytes)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
    if let Err(err) = written {
        exit_on_stdout_error(&err);
    }
    Ok(())
}

/// A UDP socket connected to the server (lesson 03: send without an address, only the
/// server's replies get in, and ICMP errors come back as ECONNREFUSED).
fn open_udp(addr: SocketAddr) -> UdpSocket {
    let any: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().unwrap_or(addr)
    } else {
        "[::]:0".parse().unwrap_or(addr)
    };
    let socket = UdpSocket::bind(any)
        .unwrap_or_else(|err| exit_with_error(&format!("cannot open a UDP socket: {err}")));
    if let Err(err) = socket.connect(addr) {
        exit_with_error(&format!("cannot send to {addr}: {err}"));
    }
    socket
}

// ANCHOR: ask
/// Sends `message` as one datagram and waits for its answer, up to `1 + retries` tries.
fn ask(socket: &UdpSocket, message: &[u8], timeout: Duration, retries: u32) -> io::Result<Vec<u8>> {
    let tries = retries.saturating_add(1);
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    for attempt in 1..=tries {
        loop {
            match socket.send(message) {
                Ok(_) => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            socket.set_read_timeout(Some(left))?;
            match socket.recv(&mut buffer) {
                // The answer to an earlier try of an earlier message may come late: a
                // reply counts only if it ends with this message.
                Ok(size) => match answers(&buffer[..size], message, max_reply(socket)) {
                    Answer::Whole => return Ok(buffer[..size].to_vec()),
                    Answer::Truncated(echoed) => {
                        note(&format!(
                            "the reply was cut to the largest datagram, {size} bytes: \
                             it echoes {echoed} of the {} bytes sent",
                            message.len()
                        ));
                        return Ok(buffer[..size].to_vec());
                    }
                    Answer::No => note(&format!(
                        "ignored a reply that does not answer {}: {}",
                        show::bytes(message),
                        show::bytes(&buffer[..size])
                    )),
                },
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(err) => return Err(err),
            }
        }
        if attempt < tries {
            note(&format!(
                "no reply within {} ms (try {attempt} of {tries}); sending again",
                timeout.as_millis()
            ));
        }
    }
    let tries = if tries == 1 {
        "1 try".to_string()
    } else {
        format!("{tries} tries")
    };
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "no reply to {tries}, each given {} ms (lost, or no UDP server there)",
            timeout.as_millis()
        ),
    ))
}
// ANCHOR_END: ask

/// A line on stderr, for the learner; an error writing it is no reason to stop.
fn note(text: &str) {
    let _ = writeln!(io::stderr(), "{text}");
}

/// The largest reply the server can send us: it depends on the server's address family.
fn max_reply(socket: &UdpSocket) -> usize {
    match socket.peer_addr().map(|addr| addr.ip().to_canonical()) {
        Ok(IpAddr::V6(_)) => MAX_IPV6_DATAGRAM,
        _ => MAX_IPV4_DATAGRAM,
    }
}

enum Answer {
    /// `[<ctime>] <message>`.
    Whole,
    /// `[<ctime>] ` and the first bytes of the message (this many), filling the largest
    /// datagram: the message was too long to be echoed whole.
    Truncated(usize),
    /// Not an answer to this message (a late answer to an earlier one, perhaps).
    No,
}

/// Is `reply` the server's `[<ctime>] <message>`, whole or cut to `max_reply` bytes?
fn answers(reply: &[u8], message: &[u8], max_reply: usize) -> Answer {
    // ctime has no `]`: the first `] ` ends it.
    let echo = reply
        .strip_prefix(b"[")
        .and_then(|rest| rest.windows(2).position(|pair| pair == b"] "))
        .map(|end| &reply[end + 3..]);
    match echo {
        Some(echo) if echo == message => Answer::Whole,
        Some(echo) if reply.len() == max_reply && message.starts_with(echo) => {
            Answer::Truncated(echo.len())
        }
        _ => Answer::No,
    }
}
