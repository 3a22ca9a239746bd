//! Lesson 09, the client: builds one request (header lines and an empty line), sends it
//! in deliberately small pieces, and prints the reply, so that the server has to put
//! the request together from many reads.
//!
//!   cargo run --bin 09_framing_client                      (the default request)
//!   cargo run --bin 09_framing_client -- --step            (Enter sends each piece)
//!   cargo run --bin 09_framing_client -- --chunk 1 "GET /x HTTP/1.0" "User-Agent: me"

use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use workbook::cli::{Args, Cli};
use workbook::{connect_failed, exit_on_stdout_error, exit_with_error, print_line, show};

const DEFAULT_PORT: u16 = 10009;
/// How long to wait for the reply and the server's close.
const REPLY_WAIT: Duration = Duration::from_secs(10);

fn main() {
    let args = Cli::new(
        "09_framing_client",
        "Lesson 09: sends one request (header lines, each ended by \\r\\n, and an empty \
         line) in small pieces, then prints the reply.",
        DEFAULT_PORT,
    )
    .value("--chunk", "N", "bytes per write (default 4)")
    .value(
        "--pause-ms",
        "MS",
        "pause between two writes, in milliseconds (default 20)",
    )
    .switch(
        "--step",
        "send a piece each time Enter is pressed (stdin), to watch the server read them",
    )
    .positional(
        "LINE",
        "header lines; without any, lines are read from stdin until an empty line or EOF \
         (not with --step). No lines at all: the request is `GET / HTTP/1.0` and \
         `Host: HOST`. An empty LINE ends the header block early: what follows is a \
         second request.",
    )
    .parse();
    let chunk: usize = args.get_or("--chunk", 4);
    let pause_ms: u64 = args.get_or("--pause-ms", 20);
    let step = args.flag("--step");
    if chunk == 0 {
        args.usage_error("--chunk must be at least 1");
    }
    if pause_ms > 10_000 {
        args.usage_error("--pause-ms must be 0 to 10000");
    }
    let addr = args
        .socket_addr()
        .unwrap_or_else(|message| exit_with_error(&message));

    let mut stream = TcpStream::connect(addr)
        .unwrap_or_else(|err| exit_with_error(&connect_failed(addr, &err, "09_framing_server")));
    // TCP_NODELAY (lesson 02): each small write leaves at once as its own segment,
    // instead of Nagle's algorithm gathering them while an ACK is outstanding.
    if let Err(err) = stream.set_nodelay(true) {
        exit_with_error(&format!("cannot set TCP_NODELAY: {err}"));
    }
    let request = build_request(&args, step)
        .unwrap_or_else(|err| exit_with_error(&format!("reading stdin: {err}")));
    let pause = Duration::from_millis(if step { 0 } else { pause_ms });
    if let Err(err) = send_in_pieces(&mut stream, &request, chunk, pause, step) {
        exit_with_error(&format!("sending to {addr}: {err}"));
    }
    match read_reply(&mut stream) {
        Ok(reply) if reply.is_empty() => exit_with_error(&format!(
            "{addr} closed the connection without a reply (see the server's log)"
        )),
        Ok(reply) => {
            let mut out = io::stdout().lock();
            // The reply as it came, `\r\n` included: like `nc`, not escaped.
            let _ = out.write_all(&reply).and_then(|()| out.flush());
        }
        Err(err) => exit_with_error(&format!("reading the reply from {addr}: {err}")),
    }
}

// ANCHOR: build_request
/// The request: each line followed by `\r\n`, then one more `\r\n` (the empty line
/// that ends the header block, as in HTTP).
fn build_request(args: &Args, step: bool) -> io::Result<Vec<u8>> {
    let mut request = Vec::new();
    let add_line = |request: &mut Vec<u8>, line: &[u8]| {
        request.extend_from_slice(line);
        request.extend_from_slice(b"\r\n");
    };
    // With --step, stdin is for the Enter key: the arguments or the default request.
    if !step || !args.messages.is_empty() {
        args.each_message(|line| {
            add_line(&mut request, line);
            Ok(())
        })?;
    }
    if request.is_empty() {
        add_line(&mut request, b"GET / HTTP/1.0");
        add_line(&mut request, format!("Host: {}", args.host).as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    Ok(request)
}
// ANCHOR_END: build_request

// ANCHOR: send_in_pieces
/// Writes the request `chunk` bytes at a time, with a pause (or, with --step, a press
/// of Enter) before each piece after the first; then half-closes: "no more requests".
fn send_in_pieces(
    stream: &mut TcpStream,
    request: &[u8],
    chunk: usize,
    pause: Duration,
    step: bool,
) -> io::Result<()> {
    let stdin = io::stdin();
    let prompt = step && stdin.is_terminal();
    let mut keys = stdin.lock();
    for (index, piece) in request.chunks(chunk).enumerate() {
        if step {
            if prompt {
                let mut out = io::stdout().lock();
                let asked = write!(out, "[Enter: send {}] ", show::count(piece.len(), "byte"))
                    .and_then(|()| out.flush());
                if let Err(err) = asked {
                    exit_on_stdout_error(&err);
                }
            }
            // EOF on stdin: send the rest without waiting.
            keys.read_until(b'\n', &mut Vec::new())?;
        } else if index > 0 && !pause.is_zero() {
            std::thread::sleep(pause);
        }
        stream.write_all(piece)?;
        // Not println!: it panics when stdout is closed (`client | head -1`).
        print_line(&format!(
            "sent {}: {}",
            show::count(piece.len(), "byte"),
            show::bytes(piece)
        ));
    }
    // shutdown(SHUT_WR): our FIN. The server may close at once after its reply
    // instead of waiting for more.
    stream.shutdown(Shutdown::Write)
}
// ANCHOR_END: send_in_pieces

/// Reads until the server closes its side: the reply is everything it sent.
fn read_reply(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    stream.set_read_timeout(Some(REPLY_WAIT))?;
    let mut reply = Vec::new();
    match stream.read_to_end(&mut reply) {
        Ok(_) => Ok(reply),
        Err(err)
            if matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Err(io::Error::new(
                err.kind(),
                format!(
                    "the server did not close the connection within {} s",
                    REPLY_WAIT.as_secs()
                ),
            ))
        }
        Err(err) => Err(err),
    }
}
