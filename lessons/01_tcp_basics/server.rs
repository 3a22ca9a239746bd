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
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use workbook::cli::Cli;
use workbook::{bind_failed, exit_with_error, show, signal, time};

const DEFAULT_PORT: u16 = 21567;
// ANCHOR: constants
/// How many finished handshakes the kernel may queue while we are busy with a
/// client. Python tutorials use `listen(5)`; Linux may round it up a little.
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
    // Ctrl-C by itself. The handler runs on its own thread, says goodbye and ends the
    // process; the kernel then closes the listening socket and any open connection.
    // It is installed before the `listening on` line, so that whoever starts us may
    // send SIGINT as soon as it reads that line.
    let served = Arc::new(AtomicU64::new(0));
    let served_by_then = Arc::clone(&served);
    signal::on_shutdown(move || {
        let clients = served_by_then.load(Ordering::Relaxed) as usize;
        // Holding stdout's lock until the process is gone keeps the main thread from
        // printing a line after this one: `shutting down` is the last line.
        let mut stdout = io::stdout().lock();
        let _ = writeln!(
            stdout,
            "shutting down: served {}",
            show::count(clients, "client")
        );
        let _ = stdout.flush();
        std::process::exit(0);
    })
    .unwrap_or_else(|message| exit_with_error(&message));
    // ANCHOR_END: shutdown

    let bound = match listener.local_addr().map(|a| a.as_socket()) {
        Ok(Some(bound)) => bound,
        _ => addr,
    };
    println!("listening on {bound}");

    // ANCHOR: accept_loop
    loop {
        // accept(2) waits for a client whose handshake the kernel has completed and
        // gives us a new socket for that one connection; the listener stays as it is.
        let (connection, _) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                // E.g. EMFILE (out of descriptors) or ECONNABORTED (the client gave up
                // while waiting). The server goes on; the pause keeps an error that
                // repeats at once from spinning a core.
                eprintln!("error: accept failed: {err}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let stream = TcpStream::from(connection);
        let peers = show::peers(&stream);
        if !quiet {
            println!("connected {peers}");
        }
        // One client at a time: until serve() returns, nobody else is accepted.
        match serve(stream, quiet, &peers) {
            Ok(()) if !quiet => println!("disconnected {peers}"),
            Ok(()) => {}
            // A reset or a failed write ends this client only, never the server.
            Err(err) => println!("disconnected {peers}: {err}"),
        }
        served.fetch_add(1, Ordering::Relaxed);
    }
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
fn serve(mut stream: TcpStream, quiet: bool, peers: &str) -> io::Result<()> {
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
            println!(
                "received {} from {peers}: {}",
                show::count(received.len(), "byte"),
                show::bytes(received)
            );
        }
        let mut reply = format!("[{}] ", time::ctime_now()).into_bytes();
        reply.extend_from_slice(received);
        // send(2) may take only part of the buffer; write_all loops until all of it
        // is in the kernel's send buffer (Python's sendall, not send).
        stream.write_all(&reply)?;
    }
    // ANCHOR_END: serve
}
