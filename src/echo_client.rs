//! The client of the echo lessons (04 select, 05 poll and later ones): several
//! connections to one server at once, so that a learner sees one server serve them all.
//!
//! It is shared because it is not the point of any of those lessons: its socket calls
//! (connect, send, recv) are lesson 01's. Each line of input is sent on every
//! connection, and each echo is printed with the connection it came from, in
//! connection order:
//!
//! ```text
//! conn 1 (127.0.0.1:50001): hello
//! conn 2 (127.0.0.1:50002): hello
//! ```
//!
//! The echo is read while the line is still being sent. A client that sends the whole
//! line before reading (Unix Network Programming calls it the batch-input deadlock)
//! hangs on a line longer than the socket buffers hold: once the server's send buffer
//! and our receive buffer are full of echo, the server stops reading, our send stops,
//! and each end waits for the other for ever. So a thread sends the line on every
//! connection in turn while this thread reads the echoes in the same order and prints
//! them as they come, a piece at a time: a 30 MB line costs 30 MB once, not once more
//! per connection.
//!
//! At the end each connection is closed in turn with a half-close, waiting for the
//! server's close, so that the server's log has one order.
//!
//! `--hold SECS` first keeps the connections open and idle, to show that idle
//! clients do not hold up anybody else on a server that asks the kernel which sockets
//! are ready.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use crate::cli::{Args, Cli};
use crate::{
    connect_failed, exit_on_stdout_error, exit_with_error, print_line, room_for_descriptors,
};

/// How much of an echo is read (and printed) at a time.
const PIECE: usize = 64 * 1024;

/// What every echo client is told on its command line (lesson 18's tokio client
/// takes the same flags).
pub struct EchoOptions {
    pub conns: usize,
    /// Seconds to keep the connections idle before sending.
    pub hold: f64,
    pub addr: SocketAddr,
}

/// Parses and checks the echo client's flags (`--conns`, `--hold`, the address and
/// the messages); a bad value is a usage error. The `Args` keep the messages.
pub fn parse(program: &'static str, about: &'static str, default_port: u16) -> (Args, EchoOptions) {
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
    // A descriptor per connection: more than the hard limit allows is a usage error.
    if let Err(message) =
        room_for_descriptors(conns.saturating_add(16), "connections and a few more")
    {
        args.usage_error(&message);
    }
    if !(0.0..=86_400.0).contains(&hold) {
        args.usage_error("--hold must be 0 to 86400 seconds");
    }
    let addr = args
        .socket_addr()
        .unwrap_or_else(|message| exit_with_error(&message));
    (args, EchoOptions { conns, hold, addr })
}

/// Runs the echo client: `program` is the binary's name, `server_bin` the server to
/// name in the hint when nobody answers.
pub fn main(program: &'static str, about: &'static str, default_port: u16, server_bin: &str) {
    let (args, options) = parse(program, about, default_port);
    let EchoOptions { conns, hold, addr } = options;

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
        print_line(&format!("holding {conns} idle connections for {hold} s"));
        thread::sleep(Duration::from_secs_f64(hold));
    }

    if let Err(err) = args.each_message(|line| exchange(&streams, &names, line)) {
        exit_with_error(&format!("talking to {addr}: {err}"));
    }
    for (stream, name) in streams.iter_mut().zip(&names) {
        if let Err(err) = close_cleanly(stream) {
            exit_with_error(&format!("{name}: closing: {err}"));
        }
    }
}

// ANCHOR: exchange
/// Sends the line on every connection and prints every echo. The sending runs on a
/// thread of its own, so that echoes are read while the line is still going out.
///
/// The sender writes the whole line on connection 1, then on 2, and so on; this
/// thread reads the whole echo of 1, then of 2, in the same order. Neither can wait
/// for the other for ever: the echo of a connection the sender has finished always
/// comes in whole, and the one the sender is writing to is the one being read (or an
/// earlier one is, which will finish). A short line fits in the socket buffers, so
/// the server has every connection's line at once, and must serve them all.
fn exchange(streams: &[TcpStream], names: &[String], message: &[u8]) -> io::Result<()> {
    thread::scope(|scope| {
        let sender = thread::Builder::new()
            .name("sender".into())
            .spawn_scoped(scope, || send_on_each(streams, names, message))?;
        let printed = print_echoes(streams, names, message.len() + 1);
        if printed.is_err() {
            // The sender may be stuck in a send on a connection whose echo nobody
            // will read now: shutting down our side makes that send fail at once.
            for stream in streams {
                let _ = stream.shutdown(Shutdown::Write);
            }
        }
        let sent = sender
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the sending thread panicked")));
        // A failed send means its connection is gone (reset, timed out), so the read
        // of that connection's echo failed too, and says it better: report the reader's.
        printed.and(sent)
    })
}

/// The line and its `\n` on every connection, in order.
fn send_on_each(streams: &[TcpStream], names: &[String], message: &[u8]) -> io::Result<()> {
    for (stream, name) in streams.iter().zip(names) {
        send_line(stream, message)
            .map_err(|err| io::Error::new(err.kind(), format!("{name}: sending: {err}")))?;
    }
    Ok(())
}

/// writev(2): the message and its line end in one system call, without copying a
/// long line to add one byte (Python: `sock.sendmsg([message, b"\n"])`). Like send,
/// it may take only part: the rest is sent in the next round.
fn send_line(mut stream: &TcpStream, message: &[u8]) -> io::Result<()> {
    let mut both = [IoSlice::new(message), IoSlice::new(b"\n")];
    let mut left = &mut both[..];
    while !left.is_empty() {
        match stream.write_vectored(left) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(sent) => IoSlice::advance_slices(&mut left, sent),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Reads `length` bytes of echo from each connection in turn and prints them as
/// `conn N (ADDR): <echo>`, a piece at a time as they arrive.
fn print_echoes(streams: &[TcpStream], names: &[String], length: usize) -> io::Result<()> {
    let mut out = io::stdout().lock();
    let mut piece = vec![0u8; PIECE.min(length)];
    for (stream, name) in streams.iter().zip(names) {
        let mut echoed = 0;
        while echoed < length {
            let want = (length - echoed).min(piece.len());
            let got = match receive(stream, &mut piece[..want]) {
                Ok(got) => got,
                Err(err) => {
                    if echoed > 0 {
                        // End the cut-off echo, so that the error gets a line of its own.
                        writeln!(out).unwrap_or_else(|err| exit_on_stdout_error(&err));
                    }
                    return Err(io::Error::new(err.kind(), format!("{name}: {err}")));
                }
            };
            // An echo server sends back exactly what we sent, in as many pieces as
            // it likes: the name goes before the first one.
            if echoed == 0 {
                write!(out, "{name}: ").unwrap_or_else(|err| exit_on_stdout_error(&err));
            }
            out.write_all(&piece[..got])
                .unwrap_or_else(|err| exit_on_stdout_error(&err));
            echoed += got;
        }
    }
    out.flush().unwrap_or_else(|err| exit_on_stdout_error(&err));
    Ok(())
}

/// recv(2): whatever has arrived, up to `buffer.len()` bytes. Here the end of the
/// stream is an error: the echo is not complete yet.
fn receive(mut stream: &TcpStream, buffer: &mut [u8]) -> io::Result<usize> {
    loop {
        match stream.read(buffer) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ));
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}
// ANCHOR_END: exchange

/// Closes one connection the polite way, one after the other: shutdown(SHUT_WR)
/// sends our FIN, then we read until the server's FIN. Every echo server closes after
/// its client's half-close, so this ends at once, in a known order.
fn close_cleanly(stream: &mut TcpStream) -> io::Result<()> {
    stream.shutdown(Shutdown::Write)?;
    // A server that never closed would leave us waiting: bound the wait.
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    // One read into a fixed buffer: the FIN (0), or bytes the server should not have
    // sent. A server that keeps sending would otherwise fill all our memory.
    let mut rest = [0u8; 4096];
    let unexpected = loop {
        match stream.read(&mut rest) {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            other => break other?,
        }
    };
    if unexpected == 0 {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{unexpected} unexpected bytes after the last echo"),
        ))
    }
}
