//! Lesson 18, the client: the echo client of lessons 04-08 (src/echo_client.rs)
//! written with tokio. Each connection is a task: the tasks connect at once, and
//! for each line every connection's task sends it while this task reads the echoes
//! in connection order and prints them as they come.
//!
//!   cargo run --bin 18_async_client -- --conns 3 hello world
//!   cargo run --bin 18_async_client -- --hold 30     # idle connections (another terminal)

use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::task::JoinHandle;
use workbook::echo_client::{self, EchoOptions};
use workbook::{connect_failed, exit_on_stdout_error, exit_with_error, print_line};

const DEFAULT_PORT: u16 = 10018;
/// How much of an echo is read (and printed) at a time.
const PIECE: usize = 64 * 1024;
/// A server that never closes after our half-close is not waited for longer.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

fn main() {
    // The same flags as every echo client (src/echo_client.rs).
    let (args, options) = echo_client::parse(
        "18_async_client",
        "Lesson 18: opens --conns connections to the async echo server, one task each, \
         and sends each line on every one of them.",
        DEFAULT_PORT,
    );
    let EchoOptions { conns, hold, addr } = options;

    // One thread is plenty for a client: its tasks wait on the network, not the CPU.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .unwrap_or_else(|err| exit_with_error(&format!("cannot start the runtime: {err}")));
    let mut connections = runtime
        .block_on(connect_all(addr, conns))
        .unwrap_or_else(|err| exit_with_error(&connect_failed(addr, &err, "18_async_server")));
    if hold > 0.0 {
        print_line(&format!("holding {conns} idle connections for {hold} s"));
        // The sleep is made inside the async block: `sleep()` looks up the runtime's
        // timer when it is called, and out here no runtime is entered yet.
        runtime.block_on(async { tokio::time::sleep(Duration::from_secs_f64(hold)).await });
    }
    // Lines from the arguments or stdin: reading stdin blocks this thread between
    // lines, which is fine here (no task has anything to do meanwhile).
    let exchanged = args.each_message(|line| runtime.block_on(exchange(&mut connections, line)));
    if let Err(err) = exchanged {
        exit_with_error(&format!("talking to {addr}: {err}"));
    }
    for connection in connections {
        let name = connection.name.clone();
        if let Err(err) = runtime.block_on(close_cleanly(connection)) {
            exit_with_error(&format!("{name}: closing: {err}"));
        }
    }
}

/// One connection, split in two halves (tokio's `into_split`): the reading half
/// stays with this task, the writing half goes to a sending task for each line.
struct Connection {
    name: String,
    reader: OwnedReadHalf,
    writer: Option<OwnedWriteHalf>,
}

// ANCHOR: connect_all
/// connect(2) on every connection at once, each in a task of its own; the results
/// are taken in connection order, so connection 1 is the first opened.
async fn connect_all(addr: SocketAddr, conns: usize) -> io::Result<Vec<Connection>> {
    let connecting: Vec<JoinHandle<io::Result<TcpStream>>> = (0..conns)
        .map(|_| tokio::spawn(TcpStream::connect(addr)))
        .collect();
    let mut connections = Vec::with_capacity(conns);
    for (index, task) in connecting.into_iter().enumerate() {
        let stream = task.await.map_err(io::Error::other)??;
        let name = match stream.local_addr() {
            Ok(local) => format!("conn {} ({local})", index + 1),
            Err(_) => format!("conn {}", index + 1),
        };
        let (reader, writer) = stream.into_split();
        connections.push(Connection {
            name,
            reader,
            writer: Some(writer),
        });
    }
    Ok(connections)
}
// ANCHOR_END: connect_all

// ANCHOR: exchange
/// Sends the line on every connection, a task each, and prints every echo in
/// connection order. No deadlock with a long line: each connection's sender is a
/// task of its own, so while this task reads connection 1, connection 2's sender
/// may be waiting for the server, and gets on once its echo is read.
async fn exchange(connections: &mut [Connection], message: &[u8]) -> io::Result<()> {
    let mut line = Vec::with_capacity(message.len() + 1);
    line.extend_from_slice(message);
    line.push(b'\n');
    let line: Arc<[u8]> = line.into();
    let mut senders = Vec::with_capacity(connections.len());
    for connection in connections.iter_mut() {
        let Some(mut writer) = connection.writer.take() else {
            return Err(io::Error::other(format!(
                "{}: already closed",
                connection.name
            )));
        };
        let line = Arc::clone(&line);
        let name = connection.name.clone();
        senders.push(tokio::spawn(async move {
            let sent = writer
                .write_all(&line)
                .await
                .map_err(|err| io::Error::new(err.kind(), format!("{name}: sending: {err}")));
            (writer, sent)
        }));
    }
    let printed = print_echoes(connections, line.len()).await;
    if printed.is_err() {
        // A sender may wait for ever for a server that reads no more: cancel them.
        for sender in &senders {
            sender.abort();
        }
    }
    let mut sent = Ok(());
    for (connection, sender) in connections.iter_mut().zip(senders) {
        match sender.await {
            Ok((writer, result)) => {
                connection.writer = Some(writer);
                sent = sent.and(result);
            }
            Err(_) if printed.is_err() => {}
            Err(err) => sent = sent.and(Err(io::Error::other(err))),
        }
    }
    // A failed send means its connection is gone, so the read of its echo failed
    // too, and says it better: report the reader's.
    printed.and(sent)
}

/// Reads `length` bytes of echo from each connection in turn and prints them as
/// `conn N (ADDR): <echo>`, a piece at a time as they arrive.
async fn print_echoes(connections: &mut [Connection], length: usize) -> io::Result<()> {
    let mut piece = vec![0u8; PIECE.min(length)];
    for connection in connections.iter_mut() {
        let mut echoed = 0;
        while echoed < length {
            let want = (length - echoed).min(piece.len());
            let got = match connection.reader.read(&mut piece[..want]).await {
                Ok(0) => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                )),
                other => other,
            };
            let got = match got {
                Ok(got) => got,
                Err(err) => {
                    if echoed > 0 {
                        // End the cut-off echo, so that the error gets a line of its own.
                        print_bytes(b"\n");
                    }
                    return Err(io::Error::new(
                        err.kind(),
                        format!("{}: {err}", connection.name),
                    ));
                }
            };
            if echoed == 0 {
                print_bytes(format!("{}: ", connection.name).as_bytes());
            }
            print_bytes(&piece[..got]);
            echoed += got;
        }
    }
    Ok(())
}
// ANCHOR_END: exchange

/// Writes to stdout at once; a closed stdout ends the client quietly. (A blocking
/// write from a task holds up the runtime's one thread: acceptable for a terminal,
/// which is the only thing this client writes to.)
fn print_bytes(bytes: &[u8]) {
    let mut out = io::stdout().lock();
    if let Err(err) = out.write_all(bytes).and_then(|()| out.flush()) {
        exit_on_stdout_error(&err);
    }
}

// ANCHOR: close
/// shutdown(SHUT_WR), then read until the server's FIN, within CLOSE_WAIT. Bytes
/// that still come are an error; the first read that brings any ends the wait
/// (counting them all could take for ever, and keeping them, all the memory).
async fn close_cleanly(mut connection: Connection) -> io::Result<()> {
    if let Some(mut writer) = connection.writer.take() {
        writer.shutdown().await?;
    }
    let mut rest = [0u8; 4096];
    let read = tokio::time::timeout(CLOSE_WAIT, connection.reader.read(&mut rest)).await;
    match read {
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the server did not close after our half-close",
        )),
        Ok(Err(err)) => Err(err),
        Ok(Ok(0)) => Ok(()),
        Ok(Ok(unexpected)) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{unexpected} unexpected bytes after the last echo"),
        )),
    }
}
// ANCHOR_END: close
