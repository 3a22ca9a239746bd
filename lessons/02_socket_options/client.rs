//! Lesson 02, the client: sends one message, half-closes, prints the whole reply.
//!
//! The message is the arguments joined by spaces, or else everything on stdin (in a
//! terminal: type lines, then Ctrl-D). After the last byte the client shuts down its
//! sending side, so the server reads end-of-file, answers the rest and closes; the
//! client reads until that close and exits.
//!
//!   cargo run --bin 02_socket_options_client -- hello world
//!   printf 'one\ntwo\n' | cargo run --bin 02_socket_options_client

use std::io::{self, IsTerminal, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use socket2::{Domain, Protocol, Socket, Type};
use workbook::cli::Cli;
use workbook::{connect_failed, exit_with_error};

const DEFAULT_PORT: u16 = 12345;

fn main() {
    let args = Cli::new(
        "02_socket_options_client",
        "Lesson 02: sends a message to the \"I get it!\" server, shuts down its sending \
         side, and prints everything the server sends back until it closes.",
        DEFAULT_PORT,
    )
    .positional(
        "MESSAGE",
        "words to send, joined by spaces; without any, all of stdin is sent (Ctrl-D ends it)",
    )
    .parse();
    let addr = args
        .socket_addr()
        .unwrap_or_else(|message| exit_with_error(&message));

    // ANCHOR: connect
    // socket(2) and connect(2), as in lesson 01. Connecting before reading stdin
    // means a missing server is reported before anyone types a message.
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .unwrap_or_else(|err| exit_with_error(&format!("cannot create a TCP socket: {err}")));
    if let Err(err) = socket.connect(&addr.into()) {
        exit_with_error(&connect_failed(addr, &err, "02_socket_options_server"));
    }
    // ANCHOR_END: connect
    let mut stream = TcpStream::from(socket);

    let message = if args.messages.is_empty() {
        if io::stdin().is_terminal() {
            let _ = writeln!(
                io::stderr(),
                "connected to {addr}: type the message, then Ctrl-D to send end-of-file"
            );
        }
        None
    } else {
        Some(args.messages.join(" "))
    };

    // ANCHOR: send_thread
    // Sending and receiving at the same time: the server echoes while we send, and if
    // we only read after sending everything, a long message would fill the server's
    // send buffer and our receive buffer, and both sides would wait for each other.
    // try_clone is dup(2): a second descriptor for the same socket, for the thread.
    let mut writer = stream
        .try_clone()
        .unwrap_or_else(|err| exit_with_error(&format!("cannot duplicate the socket: {err}")));
    let half_closed = Arc::new(Mutex::new(false));
    let flag = Arc::clone(&half_closed);
    let sending = thread::spawn(move || send_then_half_close(&mut writer, addr, message, &flag));
    // ANCHOR_END: send_thread

    // ANCHOR: read_reply
    // recv(2) until it returns 0: the server closes only after our half-close, so
    // end-of-file means the reply is complete. Each chunk is printed as it comes.
    let mut chunk = [0u8; 4096];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => exit_with_error(&format!("reading the reply from {addr}: {err}")),
        };
        // A closed stdout (`02_socket_options_client | head -1`): nobody reads what
        // we print any more, so the client stops quietly (print! would panic).
        let mut stdout = io::stdout().lock();
        let printed = stdout.write_all(&chunk[..n]).and_then(|()| stdout.flush());
        if printed.is_err() {
            std::process::exit(0);
        }
    }
    // ANCHOR_END: read_reply

    // ANCHOR: early_close
    // End-of-file before our half-close means the server closed first: it was stopped,
    // or it is not this lesson's server. (The lock waits for a half-close under way.)
    if !*half_closed.lock().unwrap_or_else(PoisonError::into_inner) {
        exit_with_error(&format!(
            "{addr} closed the connection before the whole message was sent \
             (was the server stopped?)"
        ));
    }
    // ANCHOR_END: early_close
    match sending.join() {
        Ok(Ok(())) => {}
        Ok(Err(message)) => exit_with_error(&message),
        Err(_) => exit_with_error("the sending thread panicked"),
    }
}

/// Sends the message (or all of stdin), then shuts down the sending side.
fn send_then_half_close(
    socket: &mut TcpStream,
    addr: SocketAddr,
    message: Option<String>,
    half_closed: &Mutex<bool>,
) -> Result<(), String> {
    // ANCHOR: half_close
    match message {
        // send(2) in a loop until every byte is in the kernel (Python: s.sendall).
        Some(text) => socket
            .write_all(text.as_bytes())
            .map_err(|err| format!("sending to {addr}: {err}"))?,
        // All of stdin, chunk by chunk as it comes (a terminal gives a line at a time).
        None => copy_stdin(socket, addr)?,
    }
    // shutdown(SHUT_WR): send FIN, "no more data from me", but keep the socket open
    // to receive. Python: s.shutdown(1) (socket.SHUT_WR). close(2) would end both
    // directions, and the reply would have nowhere to go.
    let mut done = half_closed.lock().unwrap_or_else(PoisonError::into_inner);
    socket
        .shutdown(Shutdown::Write)
        .map_err(|err| format!("shutting down the sending side to {addr}: {err}"))?;
    *done = true;
    // ANCHOR_END: half_close
    Ok(())
}

/// Copies stdin to the socket until end of input, telling apart whose error it was.
fn copy_stdin(socket: &mut TcpStream, addr: SocketAddr) -> Result<(), String> {
    let mut input = io::stdin().lock();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match input.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(format!("reading stdin: {err}")),
        };
        socket
            .write_all(&chunk[..n])
            .map_err(|err| format!("sending to {addr}: {err}"))?;
    }
}
