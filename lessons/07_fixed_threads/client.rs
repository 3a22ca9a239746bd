//! Lesson 07, the client: starts `--conns N` connections at the same moment, each on
//! a thread of its own; each sends one line, waits for the echo and then keeps its
//! connection (and so a server worker) busy for `--hold` seconds.
//!
//! With more connections than the server has workers, the extra ones are echoed only
//! when a worker is free: their "echoed after" time shows the wait.
//!
//! Each connection reads its echo while it is still sending (a second thread sends):
//! a line longer than the socket buffers, sent whole before reading, would deadlock.
//!
//!   cargo run --bin 07_fixed_threads_client -- --conns 5 --hold 2
//!   head -c 20000000 /dev/zero | tr '\0' x | cargo run --bin 07_fixed_threads_client -- -

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use workbook::cli::Cli;
use workbook::{connect_failed, exit_with_error, show};

const DEFAULT_PORT: u16 = 8081;
/// How much of an echo is read (and checked) at a time.
const PIECE: usize = 64 * 1024;

fn main() {
    let args = Cli::new(
        "07_fixed_threads_client",
        "Lesson 07: starts --conns connections at once; each sends one line, waits for \
         the echo, then holds its connection for --hold seconds.",
        DEFAULT_PORT,
    )
    .value(
        "--conns",
        "N",
        "how many connections to start at once (default 5)",
    )
    .value(
        "--hold",
        "SECS",
        "how long each connection stays open after its echo (default 2)",
    )
    .positional(
        "MESSAGE",
        "the line to send (default: hello); `-` sends all of stdin instead",
    )
    .parse();
    let conns: usize = args.get_or("--conns", 5);
    let hold: f64 = args.get_or("--hold", 2.0);
    if !(1..=1000).contains(&conns) {
        args.usage_error("--conns must be 1 to 1000");
    }
    if !(0.0..=3600.0).contains(&hold) {
        args.usage_error("--hold must be 0 to 3600 seconds");
    }
    let message = match args.messages.as_slice() {
        [] => b"hello".to_vec(),
        [dash] if dash == "-" => read_stdin(),
        words => words.join(" ").into_bytes(),
    };
    let addr = args
        .socket_addr()
        .unwrap_or_else(|text| exit_with_error(&text));

    // ANCHOR: start_all
    // Connect all of them first, in order: each connect(2) returns as soon as the
    // server's kernel has queued the connection, worker or no worker. The queue is
    // first in, first out, so the last ones are the ones left waiting.
    let mut streams = Vec::with_capacity(conns);
    for _ in 0..conns {
        match TcpStream::connect(addr) {
            Ok(stream) => streams.push(stream),
            Err(err) => exit_with_error(&connect_failed(addr, &err, "07_fixed_threads_server")),
        }
    }
    // Then every connection talks at the same time, on a thread of its own, which
    // owns the socket: it is closed when its thread is done, freeing a worker. The
    // threads are scoped, so they can borrow the message; all have ended when the
    // scope does.
    let started = Instant::now();
    let hold = Duration::from_secs_f64(hold);
    let outcomes: Vec<io::Result<(SocketAddr, Duration)>> = thread::scope(|scope| {
        let talking: Vec<_> = streams
            .into_iter()
            .enumerate()
            .map(|(index, stream)| {
                let message = &message;
                thread::Builder::new()
                    .name(format!("conn-{}", index + 1))
                    .spawn_scoped(scope, move || {
                        let line_end = format!(" from conn {}\n", index + 1);
                        talk(stream, &[message, line_end.as_bytes()], hold, started)
                    })
            })
            .collect();
        talking.into_iter().map(outcome).collect()
    });
    // ANCHOR_END: start_all

    // Written with writeln! and its error ignored: a closed stdout (`| head -1`) is
    // no reason to panic.
    let mut failed = false;
    let mut stdout = io::stdout().lock();
    for (number, result) in (1..=conns).zip(outcomes) {
        match result {
            Ok((local, echoed_after)) => {
                let _ = writeln!(
                    stdout,
                    "conn {number} ({local}): echoed after {:.1} s",
                    echoed_after.as_secs_f64()
                );
            }
            Err(err) => {
                let _ = writeln!(io::stderr(), "error: conn {number}: {err}");
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}

/// What a connection's thread returned, or why it never ran or did not finish.
fn outcome<T>(spawned: io::Result<thread::ScopedJoinHandle<'_, io::Result<T>>>) -> io::Result<T> {
    match spawned {
        Ok(handle) => handle
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("its thread panicked"))),
        Err(err) => Err(io::Error::new(
            err.kind(),
            format!("cannot start its thread: {err}"),
        )),
    }
}

// ANCHOR: talk
/// Sends the line (`parts`, one after the other), reads its echo, holds the
/// connection, closes it; returns our own address and how long after the start the
/// echo came.
///
/// A second thread sends while this one reads the echo. Sending it all first and
/// reading after would deadlock on a line longer than the socket buffers (Unix
/// Network Programming's batch-input problem): the echo fills our receive buffer and
/// the server's send buffer, the server blocks writing it and stops reading, our
/// send buffer and the server's receive buffer fill up, and our write waits for a
/// reader that waits for us.
fn talk(
    stream: TcpStream,
    parts: &[&[u8]],
    hold: Duration,
    started: Instant,
) -> io::Result<(SocketAddr, Duration)> {
    let local = stream.local_addr()?;
    thread::scope(|scope| {
        let sender = thread::Builder::new().spawn_scoped(scope, || send_all(&stream, parts))?;
        // The echo is what waits for a free worker.
        let echoed = expect_echo(&stream, parts);
        if echoed.is_err() {
            // The sender may be blocked in a send that nobody will make room for any
            // more: shutting the connection down makes that send fail at once.
            let _ = stream.shutdown(Shutdown::Both);
        }
        let sent = sender
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the sending thread panicked")));
        echoed.and(sent)
    })?;
    let echoed_after = started.elapsed();
    thread::sleep(hold);
    Ok((local, echoed_after))
}
// ANCHOR_END: talk

/// writev(2) until every part is sent: the message and its line end in one system
/// call, without copying a long message to add a few bytes.
fn send_all(mut stream: &TcpStream, parts: &[&[u8]]) -> io::Result<()> {
    let mut slices: Vec<IoSlice> = parts.iter().map(|part| IoSlice::new(part)).collect();
    let mut left = &mut slices[..];
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

/// Reads the echo of `parts` a piece at a time and checks each piece as it comes,
/// so that a long line is never held twice.
fn expect_echo(mut stream: &TcpStream, parts: &[&[u8]]) -> io::Result<()> {
    let total: usize = parts.iter().map(|part| part.len()).sum();
    let mut piece = vec![0u8; PIECE];
    let mut offset = 0;
    for part in parts {
        let mut checked = 0;
        while checked < part.len() {
            let want = (part.len() - checked).min(PIECE);
            let got = match stream.read(&mut piece[..want]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "the server closed after {} of {total} bytes of echo",
                            offset + checked
                        ),
                    ));
                }
                Ok(got) => got,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            let sent = &part[checked..checked + got];
            if let Some(at) = piece[..got].iter().zip(sent).position(|(a, b)| a != b) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the echo differs from what was sent at byte {}: got {} where {} was sent",
                        offset + checked + at,
                        show::bytes(&piece[at..got]),
                        show::bytes(&sent[at..])
                    ),
                ));
            }
            checked += got;
        }
        offset += part.len();
    }
    Ok(())
}

/// All of stdin, without its last line end.
fn read_stdin() -> Vec<u8> {
    let mut message = Vec::new();
    if let Err(err) = io::stdin().read_to_end(&mut message) {
        exit_with_error(&format!("reading stdin: {err}"));
    }
    if message.last() == Some(&b'\n') {
        message.pop();
    }
    message
}
