//! Lesson 14, the client: connects over TCP, runs the TLS handshake trusting only the
//! CA given with `--ca`, says what was negotiated and who the server proved to be,
//! then echoes its arguments (or stdin lines) through the encrypted session.
//!
//!   terminal 1: cargo run --bin 14_tls_server
//!   terminal 2: cargo run --bin 14_tls_client -- --ca target/14_tls_certs/ca.pem hello
//!   terminal 2: cargo run --bin 14_tls_client -- --ca target/14_tls_certs/ca.pem --show-wire hi
//!
//! There is no option to skip verification: a TLS client that accepts any certificate
//! talks, encrypted, to whoever answers, which is what TLS exists to prevent.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use rustls::ClientConnection;
use rustls::pki_types::CertificateDer;
use workbook::cli::Cli;
use workbook::{connect_failed, exit_with_error, print_line, show, tls};

/// How long any one read or write may wait for the server.
const TIMEOUT: Duration = Duration::from_secs(10);
/// A message goes out in pieces of this size, each echoed before the next is sent.
const PIECE: usize = 16 * 1024;
/// How many bytes of each record's body `--show-wire` prints.
const WIRE_BYTES: usize = 16;

fn main() {
    let args = Cli::new(
        "14_tls_client",
        "Lesson 14: an echo client over TLS that verifies the server against a CA.",
        tls::DEFAULT_PORT,
    )
    .value(
        "--ca",
        "FILE",
        "the CA certificate(s) to trust, PEM (default: the one the server made, \
         target/14_tls_certs/ca.pem)",
    )
    .value(
        "--server-name",
        "NAME",
        "the name the certificate must be valid for (default: --host)",
    )
    .switch(
        "--show-wire",
        "print every TLS record that crosses the socket: its header and first bytes, in hex",
    )
    .positional(
        "MESSAGE",
        "lines to send; without any, lines are read from stdin until an empty line or EOF",
    )
    .parse();
    let ca = args
        .get::<String>("--ca")
        .map(PathBuf::from)
        .unwrap_or_else(|| tls::ca_file(&tls::default_cert_dir()));
    let name_text = args
        .get::<String>("--server-name")
        .unwrap_or_else(|| args.host.clone());
    let addr = args
        .socket_addr()
        .unwrap_or_else(|message| exit_with_error(&message));

    // ANCHOR: setup
    // What we trust (the CA) and whom we expect (the name): both before any byte is
    // sent. A missing CA file is a hint to start the server first, which makes it.
    let config = tls::client_config(&ca).unwrap_or_else(|why| {
        exit_with_error(&format!(
            "{why}; start the server (cargo run --bin 14_tls_server), it prints its CA's path"
        ))
    });
    let name = tls::server_name(&name_text).unwrap_or_else(|why| args.usage_error(&why));
    let mut tls = ClientConnection::new(config, name)
        .unwrap_or_else(|err| exit_with_error(&format!("cannot start TLS: {err}")));
    // ANCHOR_END: setup

    // ANCHOR: connect
    // TCP first, exactly as in lesson 01: TLS runs on top of a connected socket.
    let stream = TcpStream::connect(addr)
        .unwrap_or_else(|err| exit_with_error(&connect_failed(addr, &err, "14_tls_server")));
    let timeouts = stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)));
    timeouts.unwrap_or_else(|err| exit_with_error(&format!("cannot set timeouts: {err}")));
    let mut socket = Wire::new(stream, args.flag("--show-wire"));

    // The handshake: ClientHello out; ServerHello, certificate, its signature and
    // Finished in; our Finished out. rustls checks the certificate chain against the
    // CA and the name against the certificate before it returns.
    while tls.is_handshaking() {
        if let Err(err) = tls.complete_io(&mut socket) {
            // Tell the server why, with the alert rustls has queued (UnknownCA,
            // BadCertificate...): its log then says what went wrong on our side.
            while tls.wants_write() && tls.write_tls(&mut socket).is_ok() {}
            exit_with_error(&format!(
                "{addr}: {}",
                tls::explain(&err, &ca, &name_text, &socket.first_received)
            ));
        }
    }
    // ANCHOR_END: connect
    print_session(&tls);

    if let Err(err) = args.each_message(|line| exchange(&mut tls, &mut socket, line)) {
        // rustls' own errors (an alert from the server) get their explanation.
        let why = match err.get_ref() {
            Some(inner) if inner.is::<rustls::Error>() => tls::explain(&err, &ca, &name_text, &[]),
            _ => err.to_string(),
        };
        exit_with_error(&format!("talking to {addr}: {why}"));
    }
    match close(&mut tls, &mut socket) {
        Ok(how) => print_line(how),
        Err(err) => exit_with_error(&format!("{addr}: closing: {err}")),
    }
}

// ANCHOR: session
/// What the handshake agreed on, and who the server proved to be.
fn print_session(tls: &ClientConnection) {
    let version = tls.protocol_version().map(|v| format!("{v:?}"));
    let suite = tls
        .negotiated_cipher_suite()
        .map(|suite| format!("{:?}", suite.suite()));
    print_line(&format!(
        "TLS: {}, cipher suite {}",
        version.unwrap_or_else(|| "?".into()),
        suite.unwrap_or_else(|| "?".into())
    ));
    // The server's own certificate comes first in the chain it sent.
    if let Some(certificate) = tls.peer_certificates().and_then(|chain| chain.first()) {
        print_line(&describe_certificate(certificate));
    }
}

/// `certificate: CN=localhost, issued by CN=..., valid from ... until ...`.
fn describe_certificate(certificate: &CertificateDer<'_>) -> String {
    use x509_parser::prelude::{FromDer, X509Certificate};
    match X509Certificate::from_der(certificate) {
        Ok((_, parsed)) => {
            let validity = parsed.validity();
            format!(
                "certificate: {}, issued by {}, valid from {} until {}",
                parsed.subject(),
                parsed.issuer(),
                validity.not_before,
                validity.not_after
            )
        }
        Err(err) => format!("certificate: cannot be shown ({err})"),
    }
}
// ANCHOR_END: session

// ANCHOR: exchange
/// Sends `line` and a newline, and prints the echo. In pieces, each echoed before
/// the next is sent: one `ClientConnection` cannot read and write on two threads at
/// once, and a client that wrote a long line whole before reading would wait for
/// ever (the server stops reading while we do not read its echo: lesson 04's
/// batch-input deadlock).
fn exchange(tls: &mut ClientConnection, socket: &mut Wire, line: &[u8]) -> io::Result<()> {
    let mut message = line.to_vec();
    message.push(b'\n');
    let mut session = rustls::Stream::new(tls, socket);
    let mut echo = Vec::with_capacity(message.len());
    for piece in message.chunks(PIECE) {
        session
            .write_all(piece)
            .and_then(|()| session.flush())
            .map_err(|err| waited_for(err, "take our data"))?;
        let mut got = vec![0u8; piece.len()];
        let mut filled = 0;
        while filled < got.len() {
            match session.read(&mut got[filled..]) {
                Ok(0) => {
                    return Err(io::Error::other(format!(
                        "the server ended the session (close_notify) after echoing {} of {} bytes",
                        echo.len() + filled,
                        message.len()
                    )));
                }
                Ok(n) => filled += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(io::Error::other(format!(
                        "the connection ended without close_notify (a truncated session) \
                         after {} of {} echoed bytes",
                        echo.len() + filled,
                        message.len()
                    )));
                }
                Err(err) => return Err(waited_for(err, "echo")),
            }
        }
        echo.extend_from_slice(&got);
    }
    let text = echo.strip_suffix(b"\n").unwrap_or(&echo);
    print_line(&format!("echo: {}", show::bytes(text)));
    Ok(())
}
// ANCHOR_END: exchange

// ANCHOR: close
/// A read or write that waited `TIMEOUT` fails with EAGAIN (SO_RCVTIMEO,
/// SO_SNDTIMEO: "Resource temporarily unavailable"): say what we waited for instead.
fn waited_for(err: io::Error, what: &str) -> io::Error {
    match err.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the server did not {what} within {} s", TIMEOUT.as_secs()),
        ),
        _ => err,
    }
}

/// close_notify out, then read until the server's close_notify: rustls returns 0
/// only for that, and an error if the connection ends without it (a truncation).
/// Returns the line to print: who ended the session.
fn close(tls: &mut ClientConnection, socket: &mut Wire) -> io::Result<&'static str> {
    // The server may have ended the session while we waited for input (Ctrl-C on
    // it): its close_notify is then already in our socket. Look without waiting.
    if server_has_closed(tls, socket)? {
        // Ours in answer, as far as the socket still takes it.
        tls.send_close_notify();
        while tls.wants_write() && tls.write_tls(socket).is_ok() {}
        return Ok(
            "closed: the server ended the session (close_notify) while we waited \
                   for input; ours sent",
        );
    }
    tls.send_close_notify();
    let mut session = rustls::Stream::new(tls, socket);
    session
        .flush()
        .map_err(|err| waited_for(err, "take our close_notify"))?;
    let mut rest = [0u8; 1024];
    loop {
        match session.read(&mut rest) {
            Ok(0) => return Ok("closed: close_notify sent and received"),
            Ok(n) => print_line(&format!("unexpected: {}", show::bytes(&rest[..n]))),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(io::Error::new(
                    err.kind(),
                    "the server closed without close_notify (a truncated session)",
                ));
            }
            Err(err) => return Err(waited_for(err, "answer our close_notify")),
        }
    }
}

/// Whether the server's close_notify has already come: reads what is in the socket
/// now (non-blocking) and lets rustls look at it.
fn server_has_closed(tls: &mut ClientConnection, socket: &mut Wire) -> io::Result<bool> {
    socket.stream.set_nonblocking(true)?;
    let read = loop {
        match tls.read_tls(socket) {
            // EOF, or nothing more for now.
            Ok(0) => break Ok(()),
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break Ok(()),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => break Err(err),
        }
    };
    socket.stream.set_nonblocking(false)?;
    read?;
    let state = tls
        .process_new_packets()
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?;
    Ok(state.peer_has_closed())
}
// ANCHOR_END: close

// ANCHOR: wire
/// The TCP socket, with an eye on it: `--show-wire` prints a line for every TLS record
/// that crosses it (its 5-byte header: type, version, length; then its first bytes).
/// The first bytes the server sent are kept to tell "not TLS" from other failures.
struct Wire {
    stream: TcpStream,
    show: bool,
    first_received: Vec<u8>,
    sent: Records,
    received: Records,
}

impl Wire {
    fn new(stream: TcpStream, show: bool) -> Wire {
        Wire {
            stream,
            show,
            first_received: Vec::new(),
            sent: Records::default(),
            received: Records::default(),
        }
    }
}

/// Finds record headers in a byte stream that arrives in pieces of any size.
#[derive(Default)]
struct Records {
    /// The header being read (a read may end inside one).
    header: Vec<u8>,
    /// Bytes of the current record's body still to come.
    left: usize,
}

impl Records {
    /// Prints `wire > handshake, 278 bytes: 16 03 01 01 16  01 00 01 12 ...` for each
    /// record that starts in `bytes`.
    fn show(&mut self, arrow: &str, bytes: &[u8]) {
        let mut at = 0;
        while at < bytes.len() {
            if self.left > 0 {
                let skipped = self.left.min(bytes.len() - at);
                self.left -= skipped;
                at += skipped;
                continue;
            }
            let wanted = (5 - self.header.len()).min(bytes.len() - at);
            self.header.extend_from_slice(&bytes[at..at + wanted]);
            at += wanted;
            if self.header.len() < 5 {
                continue;
            }
            let length = u16::from_be_bytes([self.header[3], self.header[4]]) as usize;
            let body = &bytes[at..bytes.len().min(at + WIRE_BYTES).min(at + length)];
            let hex = |bytes: &[u8]| {
                bytes
                    .iter()
                    .map(|byte| format!("{byte:02x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let more = if length > body.len() { " ..." } else { "" };
            print_line(&format!(
                "wire {arrow} {}, {}: {}  {}{more}",
                tls::record_type(self.header[0]),
                show::count(length, "byte"),
                hex(&self.header),
                hex(body)
            ));
            self.header.clear();
            self.left = length;
        }
    }
}

impl Read for Wire {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let n = self.stream.read(buffer)?;
        if self.first_received.is_empty() {
            self.first_received = buffer[..n.min(64)].to_vec();
        }
        if self.show {
            self.received.show("<", &buffer[..n]);
        }
        Ok(n)
    }
}

impl Write for Wire {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.stream.write(data)?;
        if self.show {
            self.sent.show(">", &data[..n]);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}
// ANCHOR_END: wire
