//! The client of the echo lessons (04 select, 05 poll and later ones): several
//! connections to one server at once, so that a learner sees one server serve them all.
//!
//! It is shared because it is not the point of any of those lessons: its socket calls
//! (connect, send, recv) are lesson 01's. Each line of input is sent on every
//! connection in turn, then each echo is read back and printed with the connection it
//! came from:
//!
//! ```text
//! conn 1 (127.0.0.1:50001): hello
//! conn 2 (127.0.0.1:50002): hello
//! ```
//!
//! At the end each connection is closed in turn with a half-close, waiting for the
//! server's close, so that the server's log has one order.
//!
//! `--hold SECS` first keeps the connections open and idle, to show that idle
//! clients do not hold up anybody else on a server that asks the kernel which sockets
//! are ready.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use crate::cli::Cli;
use crate::{connect_failed, exit_with_error};

/// Runs the echo client: `program` is the binary's name, `server_bin` the server to
/// name in the hint when nobody answers.
pub fn main(program: &'static str, about: &'static str, default_port: u16, server_bin: &str) {
    let args = Cli::new(program, about, default_port)
        .value(
            "--conns",
            "N",
            "how many connections to open at once (default 3)",
        )
        .value(
            "--hold",
            "SECS",
            "keep the connections open and idle this long before sending (default 0)",
        )
        .positional(
            "MESSAGE",
            "lines to send; without any, lines are read from stdin until an empty line or EOF",
        )
        .parse();
    let conns: usize = args.get_or("--conns", 3);
    let hold: f64 = args.get_or("--hold", 0.0);
    if conns == 0 {
        args.usage_error("--conns must be at least 1");
    }
    if !(0.0..=86_400.0).contains(&hold) {
        args.usage_error("--hold must be 0 to 86400 seconds");
    }
    let addr = args
        .socket_addr()
        .unwrap_or_else(|message| exit_with_error(&message));

    let mut streams = Vec::with_capacity(conns);
    for _ in 0..conns {
        match TcpStream::connect(addr) {
            Ok(stream) => streams.push(stream),
            Err(err) => exit_with_error(&connect_failed(addr, &err, server_bin)),
        }
    }
    let names: Vec<String> = streams
        .iter()
        .enumerate()
        .map(|(index, stream)| match stream.local_addr() {
            Ok(local) => format!("conn {} ({local})", index + 1),
            Err(_) => format!("conn {}", index + 1),
        })
        .collect();
    if hold > 0.0 {
        println!("holding {conns} idle connections for {hold} s");
        std::thread::sleep(Duration::from_secs_f64(hold));
    }

    if let Err(err) = args.each_message(|line| exchange(&mut streams, &names, line)) {
        exit_with_error(&format!("talking to {addr}: {err}"));
    }
    for (stream, name) in streams.iter_mut().zip(&names) {
        if let Err(err) = close_cleanly(stream) {
            exit_with_error(&format!("{name}: closing: {err}"));
        }
    }
}

/// Closes one connection the polite way, one after the other: shutdown(SHUT_WR)
/// sends our FIN, then we read until the server's FIN. Every echo server closes after
/// its client's half-close, so this ends at once, in a known order.
fn close_cleanly(stream: &mut TcpStream) -> io::Result<()> {
    stream.shutdown(Shutdown::Write)?;
    // A server that never closed would leave us waiting: bound the wait.
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest)?;
    if rest.is_empty() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} unexpected bytes after the last echo", rest.len()),
        ))
    }
}

/// Sends the line on every connection first, then reads every echo back: the
/// server has all the connections' data at once and must serve them all.
fn exchange(streams: &mut [TcpStream], names: &[String], message: &[u8]) -> io::Result<()> {
    let mut line = message.to_vec();
    line.push(b'\n');
    for stream in streams.iter_mut() {
        stream.write_all(&line)?;
    }
    let mut out = io::stdout().lock();
    for (stream, name) in streams.iter_mut().zip(names) {
        // An echo server sends back exactly what we sent, in as many pieces as it likes.
        let mut echo = vec![0u8; line.len()];
        stream
            .read_exact(&mut echo)
            .map_err(|err| match err.kind() {
                io::ErrorKind::UnexpectedEof => io::Error::new(
                    err.kind(),
                    format!("{name}: the server closed the connection"),
                ),
                _ => io::Error::new(err.kind(), format!("{name}: {err}")),
            })?;
        write!(out, "{name}: ")?;
        out.write_all(&echo)?;
    }
    out.flush()
}
