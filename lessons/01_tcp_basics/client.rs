//! Lesson 01, the client: connects, sends each line, prints each timestamped reply.
//!
//! The lines are the arguments, or else the lines of stdin (with a `> ` prompt when
//! stdin is a terminal). An empty line or end of input (Ctrl-D) ends the client.
//!
//!   cargo run --bin 01_tcp_basics_client -- hello "how are you"

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;

use socket2::{Domain, Protocol, Socket, Type};
use workbook::cli::Cli;
use workbook::{connect_failed, exit_with_error};

const DEFAULT_PORT: u16 = 21567;

fn main() {
    let args = Cli::new(
        "01_tcp_basics_client",
        "Lesson 01: sends each line to the timestamp server and prints each reply.",
        DEFAULT_PORT,
    )
    .positional(
        "MESSAGE",
        "lines to send; without any, lines are read from stdin until an empty line or EOF",
    )
    .parse();
    let addr = args
        .socket_addr()
        .unwrap_or_else(|message| exit_with_error(&message));

    // ANCHOR: client_steps
    // 1. socket(2), as on the server. Python: socket.socket(AF_INET, SOCK_STREAM)
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .unwrap_or_else(|err| exit_with_error(&format!("cannot create a TCP socket: {err}")));
    // 2. connect(2): the three-way handshake. The kernel picks our own address and an
    //    ephemeral port; there is no bind or listen on this side. Python: s.connect(addr)
    if let Err(err) = socket.connect(&addr.into()) {
        exit_with_error(&connect_failed(addr, &err, "01_tcp_basics_server"));
    }
    // ANCHOR_END: client_steps
    let stream = TcpStream::from(socket);

    if let Err(err) = args.each_message(|line| exchange(&stream, line)) {
        exit_with_error(&format!("talking to {addr}: {err}"));
    }
    // Dropping the stream closes the socket: close(2) sends FIN, and the server's
    // recv returns 0 bytes.
}

/// Sends one line and prints the reply as it comes; the reply ends with that line's
/// newline.
fn exchange(stream: &TcpStream, message: &[u8]) -> io::Result<()> {
    // ANCHOR: exchange
    let mut line = message.to_vec();
    line.push(b'\n');
    // The server answers each chunk as soon as it has read it, while we are still
    // sending. A long line (30 MB from a file, say) fills the server's send buffer and
    // our receive buffer long before we are done: if we only read after sending it all,
    // the server would stop reading, we could not finish sending, and both would wait
    // for each other forever. So a second thread sends while this one reads. The
    // scope waits for both; `&TcpStream` can read and write at the same time.
    thread::scope(|scope| {
        let sending = scope.spawn(|| {
            let mut writer = stream;
            writer.write_all(&line)
        });
        let received = print_reply(stream);
        if received.is_err() {
            // The reply cannot come any more: wake the sender if it is stuck in send(2).
            let _ = stream.shutdown(Shutdown::Both);
        }
        let sent = sending
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the sending thread panicked")));
        // A failed send explains a failed read better than the read's own error.
        sent.and(received)
    })
    // ANCHOR_END: exchange
}

/// Prints what the server sends until it ends with our newline.
fn print_reply(mut stream: &TcpStream) -> io::Result<()> {
    // ANCHOR: print_reply
    // The server answers each chunk it receives with `[time] chunk`, and it may have
    // received our line in many chunks. So we read, and print what came, until the
    // last byte is our newline, however many recv calls that takes.
    let mut chunk = [0u8; 4096];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ));
            }
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        print_or_stop(&chunk[..n]);
        if chunk[..n].ends_with(b"\n") {
            return Ok(());
        }
    }
    // ANCHOR_END: print_reply
}

/// Prints part of a reply. If stdout is closed (`01_tcp_basics_client | head -1`),
/// nobody reads what we print any more: the client stops quietly instead of
/// panicking as `print!` would, or reporting the EPIPE as the server's fault.
fn print_or_stop(reply: &[u8]) {
    let mut stdout = io::stdout().lock();
    let printed = stdout.write_all(reply).and_then(|()| stdout.flush());
    if printed.is_err() {
        std::process::exit(0);
    }
}
