//! Lesson 03, the server: a UDP time server.
//!
//! Every datagram that arrives, empty or not, is answered with exactly 4 bytes: the
//! current Unix time in seconds, an unsigned 32-bit number sent most significant byte
//! first (network byte order). There are no connections: one socket receives from
//! everyone and replies to whoever sent each datagram.
//!
//!   terminal 1: cargo run --bin 03_udp_time_server
//!   terminal 2: cargo run --bin 03_udp_time_client

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use socket2::{Domain, Protocol, Socket, Type};
use workbook::cli::Cli;
use workbook::{bind_failed, exit_with_error, log, show, signal, time};

const DEFAULT_PORT: u16 = 12345;
// ANCHOR: constants
/// The receive buffer. One recv_from(2) reads exactly one datagram, and a datagram
/// bigger than the buffer is cut to fit: the rest is thrown away by the kernel, for
/// good (recvmsg(2) would report MSG_TRUNC). A UDP payload is at most 65,507 bytes
/// over IPv4 (65,535 minus the 20-byte IP and 8-byte UDP headers), so 64 KiB reads
/// every datagram whole. Python: s.recvfrom(65536)
const MAX_DATAGRAM: usize = 65_536;
/// How long recv_from(2) waits before it gives up and the server looks whether
/// Ctrl-C came: a stop takes at most this long, and an idle server wakes this often.
const WAKE_EVERY: Duration = Duration::from_millis(100);
// ANCHOR_END: constants

fn main() {
    let args = Cli::new(
        "03_udp_time_server",
        "Lesson 03: a UDP server that answers every datagram with 4 bytes, the Unix time \
         in seconds as an unsigned 32-bit big-endian number.",
        DEFAULT_PORT,
    )
    .switch(
        "--quiet",
        "log only errors and the start and stop lines, not every datagram",
    )
    .parse();
    let quiet = args.flag("--quiet");
    let addr = args
        .socket_addr()
        .unwrap_or_else(|message| exit_with_error(&message));

    let socket = open_socket(addr);

    // ANCHOR: shutdown
    // The main thread waits in recv_from(2) and cannot notice Ctrl-C by itself. The
    // handler runs on a thread of its own and only raises a flag: it neither logs nor
    // takes a lock. With SO_RCVTIMEO, recv_from gives up after WAKE_EVERY when no
    // datagram comes, so the main thread looks at the flag at least that often, then
    // logs the last line itself. There is no connection to close: a datagram still
    // queued, not yet received, is to its sender one more lost datagram, and it will
    // ask again.
    let stopping = Arc::new(AtomicBool::new(false));
    let raise_the_flag = Arc::clone(&stopping);
    signal::on_shutdown(move || raise_the_flag.store(true, Ordering::Relaxed))
        .unwrap_or_else(|message| exit_with_error(&message));
    // Python: s.setsockopt(SOL_SOCKET, SO_RCVTIMEO, struct.pack('ll', 0, 100000)),
    // then BlockingIOError (EAGAIN) from recvfrom. Its s.settimeout(0.1) looks the
    // same but is not this option: it makes the socket non-blocking and waits in
    // poll(2) before each call, and raises TimeoutError.
    if let Err(err) = socket.set_read_timeout(Some(WAKE_EVERY)) {
        exit_with_error(&format!("cannot set SO_RCVTIMEO: {err}"));
    }
    // ANCHOR_END: shutdown

    let bound = socket.local_addr().unwrap_or(addr);
    log::listening(bound);

    // ANCHOR: serve_loop
    // Counted here, on the one thread that sends: the last line counts every reply
    // that left, however the signal falls between a send_to and the count.
    let mut answered = 0;
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    while !stopping.load(Ordering::Relaxed) {
        // recvfrom(2) waits for the next datagram from anyone and says who sent it:
        // the sender's address is the only way to know where to reply.
        // Python: data, address = s.recvfrom(65536)
        let (size, sender) = match socket.recv_from(&mut buffer) {
            Ok(received) => received,
            // SO_RCVTIMEO expired (EAGAIN, which Rust calls WouldBlock): nothing came
            // for WAKE_EVERY. Look at the flag, and wait again.
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            // A signal arrived during the call (EINTR): simply call again.
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                // Rare for an unconnected socket on Linux (e.g. ENOMEM). Windows
                // reports an earlier reply's ICMP "port unreachable" here, as
                // WSAECONNRESET. No datagram is lost by going on; the pause keeps an
                // error that repeats at once from spinning a core.
                log!("{} recv_from failed: {err}", log::ERROR);
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        // One recv_from is one whole datagram, exactly as it was sent: 0 bytes is an
        // empty datagram (a valid request), not end of file as it is for TCP.
        let request = &buffer[..size];
        if !quiet {
            log!(
                "{} {} from {sender}: {}",
                log::RECEIVED,
                show::count(size, "byte"),
                show::bytes(request)
            );
        }
        let Some(reply) = time_reply(sender) else {
            continue;
        };
        match send_reply(&socket, &reply, sender) {
            Ok(()) => {
                answered += 1;
                if !quiet {
                    log!(
                        "replied to {sender}: {} (bytes {})",
                        u32::from_be_bytes(reply),
                        hex(&reply)
                    );
                }
            }
            // One sender's trouble (say, a forged address we cannot send to) is
            // logged, and the server goes on with the next datagram.
            Err(err) => log!("{} cannot reply to {sender}: {err}", log::ERROR),
        }
    }
    // Lines are written to stdout by the log's own thread (src/log.rs): last_line
    // waits a moment for it, so that this line is not lost when main returns.
    log::last_line(format!(
        "{}: answered {}",
        log::SHUTTING_DOWN,
        show::count(answered, "datagram")
    ));
    // ANCHOR_END: serve_loop
}

/// A UDP server is two system calls: socket and bind.
fn open_socket(addr: SocketAddr) -> UdpSocket {
    // ANCHOR: server_steps
    // 1. socket(2): SOCK_DGRAM is UDP, datagrams instead of a byte stream.
    //    Python: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .unwrap_or_else(|err| exit_with_error(&format!("cannot create a UDP socket: {err}")));

    // No SO_REUSEADDR, although the Python tutorial sets it. It helps a TCP server
    // rebind while old connections sit in TIME_WAIT; UDP has no connections, so a
    // restarted server can always bind again at once. And on Linux it would do harm:
    // two UDP sockets that both set it may bind the same port, and a second copy of
    // this server would silently take over the datagrams instead of failing here.

    // 2. bind(2): claim the address and port; "address already in use" happens here.
    //    Python: s.bind((host, port))
    if let Err(err) = socket.bind(&addr.into()) {
        exit_with_error(&bind_failed(addr, &err));
    }

    // No listen(2), no accept(2): they exist to set up connections, and UDP has none.
    // This one socket now receives every datagram sent to the port, from anyone, and
    // can send to anyone. The kernel does no handshake and keeps no state per client.
    // ANCHOR_END: server_steps
    // From here std's UdpSocket is enough: its recv_from and send_to are the system
    // calls of the same names.
    UdpSocket::from(socket)
}

/// The 4 bytes of the reply, or `None` when the clock does not fit the protocol.
fn time_reply(sender: SocketAddr) -> Option<[u8; 4]> {
    // ANCHOR: reply
    // The clock as whole seconds since 1970-01-01 00:00:00 UTC. Python: int(time.time())
    let now = time::unix_seconds(SystemTime::now());
    // The protocol has 32 unsigned bits, enough until 2106-02-07 06:28:15 UTC. After
    // that, rather than send a wrong time, we send none (Python's struct.pack('!I', n)
    // raises struct.error for such an n, and its server would not reply either).
    let Ok(seconds) = u32::try_from(now) else {
        log!(
            "{} cannot reply to {sender}: {now} seconds does not fit in 32 bits",
            log::ERROR
        );
        return None;
    };
    // Network byte order is big-endian: the most significant byte goes first.
    // to_be_bytes is C's htonl() and Python's struct.pack('!I', seconds); on a
    // little-endian x86 or ARM machine it reverses the bytes the CPU keeps in memory.
    let reply: [u8; 4] = seconds.to_be_bytes();
    // ANCHOR_END: reply
    Some(reply)
}

/// Sends the reply to `to`, trying again if a signal interrupts the call.
fn send_reply(socket: &UdpSocket, reply: &[u8], to: SocketAddr) -> io::Result<()> {
    // ANCHOR: send_reply
    loop {
        // sendto(2) sends one datagram to the given address. Unlike TCP's send, it is
        // all or nothing: the whole datagram leaves, or the call fails (EMSGSIZE when it
        // is too big), so there is no sendall. Success means "handed to the network",
        // not "delivered". Python: s.sendto(reply, address)
        match socket.send_to(reply, to) {
            Ok(_) => return Ok(()),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        }
    }
    // ANCHOR_END: send_reply
}

/// `6b 02 bd 20`: the bytes as they go on the wire, for the log.
fn hex(bytes: &[u8]) -> String {
    let shown: Vec<String> = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    shown.join(" ")
}
