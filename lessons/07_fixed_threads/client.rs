//! Lesson 07, the client: starts `--conns N` connections at the same moment, each on
//! a thread of its own; each sends one line, waits for the echo and then keeps its
//! connection (and so a server worker) busy for `--hold` seconds.
//!
//! With more connections than the server has workers, the extra ones are echoed only
//! when a worker is free: their "echoed after" time shows the wait.
//!
//!   cargo run --bin 07_fixed_threads_client -- --conns 5 --hold 2

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use workbook::cli::Cli;
use workbook::{connect_failed, exit_with_error};

const DEFAULT_PORT: u16 = 8081;

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
    .positional("MESSAGE", "the line to send (default: hello)")
    .parse();
    let conns: usize = args.get_or("--conns", 5);
    let hold: f64 = args.get_or("--hold", 2.0);
    if !(1..=1000).contains(&conns) {
        args.usage_error("--conns must be 1 to 1000");
    }
    if !(0.0..=3600.0).contains(&hold) {
        args.usage_error("--hold must be 0 to 3600 seconds");
    }
    let message = if args.messages.is_empty() {
        "hello".to_string()
    } else {
        args.messages.join(" ")
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
    // Then every connection talks at the same time, on a thread of its own.
    let started = Instant::now();
    let hold = Duration::from_secs_f64(hold);
    let handles: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(index, stream)| {
            let line = format!("{message} from conn {}\n", index + 1);
            thread::spawn(move || talk(stream, &line, hold, started))
        })
        .collect();
    // ANCHOR_END: start_all

    // Written with writeln! and its error ignored: a closed stdout (`| head -1`) is
    // no reason to panic.
    let mut failed = false;
    let mut stdout = io::stdout().lock();
    for (number, handle) in (1..=conns).zip(handles) {
        match handle.join() {
            Ok(Ok((local, echoed_after))) => {
                let _ = writeln!(
                    stdout,
                    "conn {number} ({local}): echoed after {:.1} s",
                    echoed_after.as_secs_f64()
                );
            }
            Ok(Err(err)) => {
                let _ = writeln!(io::stderr(), "error: conn {number}: {err}");
                failed = true;
            }
            Err(_) => {
                let _ = writeln!(io::stderr(), "error: conn {number}: its thread panicked");
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}

/// Sends `line`, reads its echo, holds the connection; returns our own address and
/// how long after the start the echo came.
fn talk(
    mut stream: TcpStream,
    line: &str,
    hold: Duration,
    started: Instant,
) -> io::Result<(SocketAddr, Duration)> {
    let local = stream.local_addr()?;
    stream.write_all(line.as_bytes())?;
    // The echo is what waits for a free worker.
    let mut echo = vec![0u8; line.len()];
    stream.read_exact(&mut echo)?;
    let echoed_after = started.elapsed();
    if echo != line.as_bytes() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the echo differs from what was sent",
        ));
    }
    thread::sleep(hold);
    Ok((local, echoed_after))
}
