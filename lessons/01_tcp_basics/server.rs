//! Lesson 01, the server: a TCP timestamp server that serves one client at a time.
//!
//! Each chunk a client sends comes back as `[<ctime>] <chunk>`. While one client is
//! connected, the next waits in the listen backlog: that is the point of this lesson,
//! and what lessons 04 to 07 fix.
//!
//!   terminal 1: cargo run --bin 01_tcp_basics_server
//!   terminal 2: cargo run --bin 01_tcp_basics_client

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use workbook::cli::Cli;
use workbook::{bind_failed, exit_with_error, log, show, signal, time};

const DEFAULT_PORT: u16 = 21567;
// ANCHOR: constants
/// How many finished handshakes the kernel may queue while we are busy with a
/// client, as in the Python tutorials' `listen(5)`. Linux queues one more than this
/// (6 here), and drops the SYN of the next client, whose kernel sends it again later.
const BACKLOG: i32 = 5;
/// The most one recv(2) takes; a client's message may arrive in several chunks.
const CHUNK_SIZE: usize = 4096;
// ANCHOR_END: constants

fn main() {
    let args = Cli::new(
        "01_tcp_basics_server",
        "Lesson 01: a TCP server that answers each chunk with `[<ctime>] <chunk>`, \
         one client at a time.",
        DEFAULT_PORT,
    )
    .switch("--quiet", "log only errors and the start and stop lines")
    .parse();
    let quiet = args.flag("--quiet");
    let addr = args
        .socket_addr()
        .unwrap_or_else(|message| exit_with_error(&message));

    let listener = open_listener(addr);

    // ANCHOR: shutdown
    // The main thread will be blocked in accept(2) or recv(2) and cannot notice
    // Ctrl-C by itself. The handler runs on a thread of its own and only calls
    // shutdown(2) on the sockets the main thread waits on, which wakes it
    // (src/signal.rs); the main thread then leaves its loop and logs the last line
    // itself, so no line can come after it. It is installed before the `listening on`
    // line, so that whoever starts us may send SIGINT as soon as it reads that line.
    let wake = signal::WakeOnShutdown::install(&listener)
        .unwrap_or_else(|message| exit_with_error(&message));
    // ANCHOR_END: shutdown

    let bound = match listener.local_addr().map(|a| a.as_socket()) {
        Ok(Some(bound)) => bound,
        _ => addr,
    };
    log::listening(bound);

    // ANCHOR: accept_loop
    let mut served = 0;
    loop {
        // accept(2) waits for a client whose handshake the kernel has completed and
        // gives us a new socket for that one connection; the listener stays as it is.
        // ANCHOR: accept_errors
        let (connection, _) = match listener.accept() {
            Ok(accepted) => accepted,
            // Ctrl-C: the handler shut the listener down, and accept failed.
            Err(_) if wake.stopping() => break,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                // E.g. EMFILE (out of descriptors) or ECONNABORTED (the client gave up
                // while waiting). The server goes on; the pause keeps an error that
                // repeats at once from spinning a core.
                log!("{} accept failed: {err}", log::ERROR);
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        // ANCHOR_END: accept_errors
        // Shared with the Ctrl-C handler, which may need to shut it down.
        let stream = Arc::new(TcpStream::from(connection));
        if !wake.client_arrived(&stream) {
            break;
        }
        let peers = show::peers(&stream);
        if !quiet {
            log!("{} {peers}", log::CONNECTED);
        }
        // ANCHOR: one_client_fails
        // One client at a time: until serve() returns, nobody else is accepted.
        match serve(&stream, quiet, &peers) {
            Ok(()) if !quiet => log!("{} {peers}", log::DISCONNECTED),
            Ok(()) => {}
            // A reset or a failed write ends this client only, never the server.
            Err(err) => log!("{} {peers}: {err}", log::DISCONNECTED),
        }
        // ANCHOR_END: one_client_fails
        wake.client_left();
        served += 1;
    }
    // ANCHOR: last_line
    // Lines are written to stdout by the log's own thread (src/log.rs): last_line
    // waits a moment for it, so that this line is not lost when main returns.
    log::last_line(format!(
        "{}: served {}",
        log::SHUTTING_DOWN,
        show::count(served, "client")
    ));
    // ANCHOR_END: last_line
    // ANCHOR_END: accept_loop
}

/// The four steps of a TCP server, each its own system call.
fn open_listener(addr: SocketAddr) -> Socket {
    // ANCHOR: server_steps
    // 1. socket(2): a TCP socket of the address's family.
    //    Python: socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    let listener = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .unwrap_or_else(|err| exit_with_error(&format!("cannot create a TCP socket: {err}")));

    // 2. setsockopt(SOL_SOCKET, SO_REUSEADDR, 1): lets a restarted server bind its port
    //    while connections of the previous run still sit in TIME_WAIT (lesson 02).
    //    Python: s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if let Err(err) = listener.set_reuse_address(true) {
        exit_with_error(&format!("cannot set SO_REUSEADDR: {err}"));
    }

    // 3. bind(2): claim the address and port. This is where "address already in use"
    //    happens. Python: s.bind((host, port))
    if let Err(err) = listener.bind(&addr.into()) {
        exit_with_error(&bind_failed(addr, &err));
    }

    // 4. listen(2): from now on the kernel completes handshakes for us and queues up
    //    to BACKLOG of them until we accept(). Python: s.listen(5)
    if let Err(err) = listener.listen(BACKLOG) {
        exit_with_error(&format!("cannot listen on {addr}: {err}"));
    }
    // ANCHOR_END: server_steps
    listener
}

/// Answers every chunk of one client until it closes its side.
fn serve(mut stream: &TcpStream, quiet: bool, peers: &str) -> io::Result<()> {
    // ANCHOR: serve
    let mut chunk = [0u8; CHUNK_SIZE];
    loop {
        // recv(2) returns whatever has arrived, from 1 byte to CHUNK_SIZE: TCP is a
        // byte stream, so one send by the client is not one recv here.
        let received = match stream.read(&mut chunk) {
            // 0 bytes: the client closed (or half-closed) its side. EOF, not an error.
            Ok(0) => return Ok(()),
            Ok(n) => &chunk[..n],
            // A signal arrived during the call (EINTR): simply call again.
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        if !quiet {
            log!(
                "{} {} from {peers}: {}",
                log::RECEIVED,
                show::count(received.len(), "byte"),
                show::bytes(received)
            );
        }
        // ANCHOR: send_all
        let mut reply = format!("[{}] ", time::ctime_now()).into_bytes();
        reply.extend_from_slice(received);
        // send(2) may take only part of the buffer (when a signal interrupts it while
        // it waits for room, for one); write_all calls it again for the rest until
        // all of it is in the kernel's send buffer (Python's sendall, not send).
        stream.write_all(&reply)?;
        // ANCHOR_END: send_all
    }
    // ANCHOR_END: serve
}
