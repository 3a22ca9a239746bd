//! The checks every echo server (lessons 04 to 07) must pass, one function each, so
//! that each lesson's test states them in one line and they cannot drift apart.
//! Each starts its own server from the binary it is given.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use super::*;

/// Sends `message` on `stream` and checks the exact same bytes come back.
pub fn round_trip(stream: &mut TcpStream, message: &[u8]) {
    stream.write_all(message).unwrap();
    let echo = read_exactly(stream, message.len());
    assert_same_bytes(&echo, message, "the echo");
}

/// Waits, up to [`WAIT`], until `check` holds; returns whether it did.
pub fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        // Polling a value in /proc: there is no event to wait for.
        thread::sleep(Duration::from_millis(10));
    }
    check()
}

/// `count` connections open at once, each echoing its own message correctly.
pub fn many_at_once(server_exe: &str, args: &[&str], count: usize) {
    let server = Server::start(server_exe, args);
    let mut streams: Vec<TcpStream> = (0..count).map(|_| connect(server.addr)).collect();
    // Every connection sends before any reads: the server has them all at once.
    for (index, stream) in streams.iter_mut().enumerate() {
        stream
            .write_all(format!("message {index} from connection {index}\n").as_bytes())
            .unwrap();
    }
    for (index, stream) in streams.iter_mut().enumerate() {
        let want = format!("message {index} from connection {index}\n");
        let echo = read_exactly(stream, want.len());
        assert_same_bytes(
            &echo,
            want.as_bytes(),
            &format!("the echo on connection {index}"),
        );
    }
}

/// An idle connection (connected, silent) does not delay another client.
pub fn idle_does_not_block(server_exe: &str, args: &[&str]) {
    let server = Server::start(server_exe, args);
    let _idle = connect(server.addr);
    let _idle_too = connect(server.addr);
    let mut busy = connect(server.addr);
    round_trip(&mut busy, b"the idle ones do not hold me up\n");
}

/// A payload far larger than any buffer comes back intact. The writer runs on its
/// own thread: the echo fills our receive buffer while we are still sending.
pub fn large_payload(server_exe: &str, args: &[&str], bytes: usize) {
    let server = Server::start(server_exe, args);
    let payload: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
    let mut stream = connect(server.addr);
    let mut writer = stream.try_clone().unwrap();
    let sent = payload.clone();
    let writing = thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let echo = read_to_eof(&mut stream);
    writing.join().unwrap();
    assert_same_bytes(&echo, &payload, "the echo of the large payload");
}

/// A client that sends a flood without reading neither delays another client nor
/// makes the server's memory grow with the flood. `full_line`: a log line the server
/// prints when it stops reading that client (for readiness servers), waited for
/// before the measurement. The flood is then read back whole: nothing was lost.
pub fn flood_without_reading(server_exe: &str, args: &[&str], full_line: Option<&str>) {
    const FLOOD: usize = 32 << 20;
    let mut server = Server::start(server_exe, args);
    let rss_before = server.rss_kib();
    let mut flooder = connect(server.addr);
    let mut writer = flooder.try_clone().unwrap();
    // No write timeout: this thread blocks once the server stops reading, which is
    // the point; it finishes when we read the echo below.
    writer.set_write_timeout(None).unwrap();
    let writing = thread::spawn(move || {
        let chunk = vec![b'f'; 1 << 16];
        let mut written = 0;
        while written < FLOOD {
            writer.write_all(&chunk).unwrap();
            written += chunk.len();
        }
    });
    if let Some(line) = full_line {
        server.wait_for_line(line);
    }
    // Someone else is served while the flooder's echo piles up.
    let mut other = connect(server.addr);
    round_trip(&mut other, b"still served\n");
    let grown = server.rss_kib().saturating_sub(rss_before);
    assert!(
        grown < 16 * 1024,
        "the server grew by {grown} KiB while a client sent without reading"
    );
    // Now read the flood back: all 32 MiB arrive, in order.
    let mut received = 0;
    let mut buffer = vec![0u8; 1 << 16];
    while received < FLOOD {
        let n = flooder.read(&mut buffer).unwrap();
        assert!(n > 0, "the server closed after {received} bytes");
        assert!(buffer[..n].iter().all(|&b| b == b'f'));
        received += n;
    }
    writing.join().unwrap();
    assert_eq!(received, FLOOD);
}

/// A reset connection, a connect-and-close, and a half-closed one: the server goes
/// on, and the half-closed one still gets its echo before EOF.
pub fn resets_and_half_close(server_exe: &str, args: &[&str]) {
    let mut server = Server::start(server_exe, args);
    drop(connect(server.addr));
    let mut doomed = connect(server.addr);
    round_trip(&mut doomed, b"about to reset\n");
    reset(doomed);
    let mut half = connect(server.addr);
    half.write_all(b"half-closed: the echo still comes")
        .unwrap();
    half.shutdown(Shutdown::Write).unwrap();
    assert_same_bytes(
        &read_to_eof(&mut half),
        b"half-closed: the echo still comes",
        "the echo after a half-close",
    );
    let mut after = connect(server.addr);
    round_trip(&mut after, b"\xff\xfe not UTF-8 \x00\n");
    assert!(server.is_running());
    assert!(!server.stderr_text().contains("panicked"));
    let _ = server.drain();
}

/// After 100 clients have come and gone (every third by a reset), the server has
/// exactly the descriptors and threads it had before.
pub fn no_descriptor_leak(server_exe: &str, args: &[&str]) {
    let server = Server::start(server_exe, args);
    let baseline = server.open_fds();
    let baseline_threads = server.threads();
    for index in 0..100 {
        let mut stream = connect(server.addr);
        round_trip(&mut stream, format!("client {index}\n").as_bytes());
        if index % 3 == 0 {
            reset(stream);
        }
    }
    let mut now = 0;
    let back = eventually(|| {
        now = server.open_fds();
        now == baseline
    });
    assert!(
        back,
        "{now} descriptors open, {baseline} before the clients"
    );
    let mut threads = 0;
    let back = eventually(|| {
        threads = server.threads();
        threads == baseline_threads
    });
    assert!(
        back,
        "{threads} threads, {baseline_threads} before the clients"
    );
}

/// Under a limit of 64 descriptors, 100 connections at once: the server survives
/// accept's EMFILE, and once they close it serves a fresh client.
pub fn survives_fd_limit(server_exe: &str, args: &[&str]) {
    let mut server = Server::start_with_fd_limit(server_exe, args, 64);
    crowd_past_fd_limit(&mut server);
    let mut fresh = connect(server.addr);
    round_trip(&mut fresh, b"served after the crowd left\n");
    assert!(server.is_running());
}

/// For a server started with a limit of 64 descriptors: 100 connections at once make
/// it meet EMFILE and survive; they close, and this returns once the server has freed
/// every descriptor, ready for a fresh client (any protocol: the caller checks it).
pub fn crowd_past_fd_limit(server: &mut Server) {
    let baseline = server.open_fds();
    let streams: Vec<TcpStream> = (0..100).map(|_| connect(server.addr)).collect();
    server.wait_for_line("Too many open files");
    assert!(server.is_running());
    drop(streams);
    // "Once they close": the server has accepted every one of them from its queue,
    // seen it go and freed its descriptor (until then a new client may meet the
    // same EMFILE).
    let (mut open, mut queued) = (0, 0);
    let freed = eventually(|| {
        open = server.open_fds();
        queued = server.accept_queue();
        open <= baseline && queued == 0
    });
    assert!(
        freed,
        "{open} descriptors open ({baseline} at the start), {queued} still queued"
    );
}

/// Enough traffic of every kind for a server to log well over what a pipe holds
/// (64 KiB; about 150 KB of log lines):
/// many round trips on several connections, a reset, a half-close. Every echo is
/// checked, so this also proves the server still serves.
pub fn busy_with_logging(addr: SocketAddr) {
    let message = [b'x'; 60];
    let mut streams: Vec<TcpStream> = (0..4).map(|_| connect(addr)).collect();
    // About 125 bytes of log per round trip: 1,200 of them log about 150 KB, more
    // than twice what a pipe holds.
    for round in 0..1200 {
        let stream = &mut streams[round % 4];
        round_trip(stream, &message);
    }
    let mut doomed = connect(addr);
    round_trip(&mut doomed, b"about to reset\n");
    reset(doomed);
    let mut half = connect(addr);
    half.write_all(b"half-closed").unwrap();
    half.shutdown(Shutdown::Write).unwrap();
    assert_same_bytes(
        &read_to_eof(&mut half),
        b"half-closed",
        "the echo after a half-close",
    );
    let mut after = connect(addr);
    round_trip(&mut after, b"still serving\n");
}

/// A client that sends 32 MiB without pause but reads slowly (a few seconds): the
/// server's output buffer for it is never empty, so it is never simply cleared. Its
/// memory must still stay bounded (by the output cap, not by the bytes echoed): the
/// server's VmRSS may grow by at most 8 MiB. Every byte comes
/// back, in order. (The defect it caught: lesson 08 appended the echo to a `Vec` that
/// it emptied only once everything was sent, so the `Vec` held every byte ever
/// echoed to that client.)
pub fn slow_reader_memory_stays_bounded(server_exe: &str, args: &[&str]) {
    use socket2::{Domain, Socket, Type};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// What the client sends, and the longest it sends (if the machine is slow).
    const TOTAL: usize = 32 << 20;
    const SENDING: Duration = Duration::from_secs(8);
    const CHUNK: usize = 64 * 1024;
    const READ: usize = 16 * 1024;
    const READ_EVERY: Duration = Duration::from_micros(500);
    /// How much the server's VmRSS may grow: its output cap for one client (1 MiB in
    /// lessons 04 to 09) several times over, and well below the bytes echoed.
    const MOST_GROWTH_KIB: u64 = 8 * 1024;

    let server = Server::start(server_exe, args);
    let rss_start = server.rss_kib();
    // SO_RCVBUF before connect(2): the window offered to the server is set in the
    // handshake, so a small receive buffer makes this client slow to take the echo.
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket
        .connect_timeout(&server.addr.into(), WAIT)
        .unwrap_or_else(|err| panic!("cannot connect to {}: {err}", server.addr));
    let mut reader: TcpStream = socket.into();
    reader.set_read_timeout(Some(WAIT)).unwrap();
    reader.set_write_timeout(Some(WAIT)).unwrap();
    let mut writer = reader.try_clone().unwrap();
    let sending = Arc::new(AtomicBool::new(true));
    let still_sending = Arc::clone(&sending);
    // Bytes are numbered (i % 251) so that the echo can be checked in order.
    let writing = thread::spawn(move || {
        let started = Instant::now();
        let mut sent = 0usize;
        let mut chunk = vec![0u8; CHUNK];
        while sent < TOTAL && started.elapsed() < SENDING {
            for (i, byte) in chunk.iter_mut().enumerate() {
                *byte = ((sent + i) % 251) as u8;
            }
            if writer.write_all(&chunk).is_err() {
                // The reader found a wrong byte and shut the socket: it says what.
                break;
            }
            sent += CHUNK;
        }
        let _ = writer.shutdown(Shutdown::Write);
        still_sending.store(false, Ordering::SeqCst);
        sent
    });
    let reading = thread::spawn(move || {
        let mut received = 0usize;
        let mut buffer = vec![0u8; READ];
        loop {
            let n = reader
                .read(&mut buffer)
                .unwrap_or_else(|err| panic!("read failed after {received} bytes: {err}"));
            if n == 0 {
                return received;
            }
            let want: Vec<u8> = (received..received + n).map(|i| (i % 251) as u8).collect();
            if buffer[..n] != want[..] {
                // Stop the writer at once (it would wait for a server that stopped
                // reading), then show the difference as text.
                let _ = reader.shutdown(Shutdown::Both);
                let what = format!("the echo (from byte {received} of the stream)");
                assert_same_bytes(&buffer[..n], &want, &what);
            }
            received += n;
            // Slow while the writer sends; then fast, to the server's EOF.
            if sending.load(Ordering::SeqCst) {
                thread::sleep(READ_EVERY);
            }
        }
    });
    // Sampling a value in /proc while the client runs: there is no event to wait for.
    let mut rss_most = rss_start;
    while !reading.is_finished() {
        rss_most = rss_most.max(server.rss_kib());
        thread::sleep(Duration::from_millis(50));
    }
    let received = reading
        .join()
        .unwrap_or_else(|_| panic!("the slow reader failed: see its message above"));
    let sent = writing.join().unwrap();
    assert_eq!(received, sent, "the echo is not what was sent");
    let grown = rss_most.saturating_sub(rss_start);
    eprintln!(
        "slow reader ({args:?}): {} MiB echoed; server VmRSS {rss_start} KiB at the start, \
         at most {rss_most} KiB (+{grown} KiB)",
        sent >> 20
    );
    assert!(
        grown <= MOST_GROWTH_KIB,
        "the server's memory grew by {grown} KiB (from {rss_start} to {rss_most} KiB) \
         while it echoed {} MiB to a slow reader; the bound is {MOST_GROWTH_KIB} KiB",
        sent >> 20
    );
}

/// How long [`accept_errors_are_rate_limited`] keeps its crowd connected.
const CROWD_HOLD: Duration = Duration::from_secs(2);

/// Under a limit of 64 descriptors, 100 connections held for a while: accept(2) fails
/// with EMFILE over and over (a server pauses after each failure and tries again), and
/// the server must log that at most about once a second, not once per failure.
pub fn accept_errors_are_rate_limited(server_exe: &str, args: &[&str]) {
    let started = Instant::now();
    let mut server = Server::start_with_fd_limit(server_exe, args, 64);
    let crowd: Vec<TcpStream> = (0..100).map(|_| connect(server.addr)).collect();
    server.wait_for_line("Too many open files");
    // Not a wait for readiness: the crowd stays so that accept keeps failing.
    thread::sleep(CROWD_HOLD);
    drop(crowd);
    let exited = server.stop(SIGINT);
    assert_clean_shutdown(&exited);
    let seconds = started.elapsed().as_secs();
    let errors: Vec<&str> = exited
        .stdout
        .lines()
        .filter(|line| line.starts_with(workbook::log::ERROR) && line.contains("accept"))
        .collect();
    assert!(
        errors.len() as u64 <= 2 + seconds,
        "{} accept error lines in {seconds} s; the first few:\n{}",
        errors.len(),
        errors[..errors.len().min(10)].join("\n")
    );
}

// ---------------------------------------------------------------------------------
// The single-thread echo lessons (04 select, 05 poll): the same client and the same
// log, so the same lesson tests, each naming its own transcripts.
// ---------------------------------------------------------------------------------

/// A server's log as terminal 1 shows it: Ctrl-C echoed as `^C` before the last line.
pub fn as_in_terminal(stdout: &str) -> String {
    let last = workbook::log::SHUTTING_DOWN;
    stdout.replace(&format!("\n{last}"), &format!("\n^C{last}"))
}

/// Lesson `lesson` (e.g. `04_select`): its client opens three connections and sends
/// `hello` and `world` on each; every line comes back on every connection, and the
/// server's log and the client's output are the book's `NN_client` and `NN_server`.
pub fn client_and_server_transcripts(lesson: &str, server_exe: &str, client_exe: &str, port: u16) {
    let number = &lesson[..2];
    let mut server = Server::start(server_exe, &[]);
    let real_port = server.port().to_string();
    let client = run(
        client_exe,
        &["--port", &real_port, "--conns", "3", "hello", "world"],
        b"",
    );
    assert!(client.status.success(), "{}", client.stderr);
    let lines: Vec<&str> = client.stdout.lines().collect();
    assert_eq!(lines.len(), 6, "the client printed:\n{}", client.stdout);
    for (index, line) in lines.iter().enumerate() {
        let word = if index < 3 { "hello" } else { "world" };
        let from = format!("conn {} (127.0.0.1:", index % 3 + 1);
        assert!(
            line.starts_with(&from) && line.ends_with(&format!("): {word}")),
            "line {} of the client: {line:?}",
            index + 1
        );
    }
    for _ in 0..3 {
        server.wait_for_line(workbook::log::DISCONNECTED);
    }
    let exited = server.stop(SIGINT);
    assert_clean_shutdown(&exited);
    let normal = transcript::Normaliser::new()
        .port(exited.listening_port(), port)
        .pattern(TIMING_COUNTS, TIMING_COUNTS_SHOWN);
    transcript::check(
        &format!("{number}_client"),
        &normal.apply(&format!(
            "$ cargo run --bin {lesson}_client -- --conns 3 hello world\n{}",
            client.stdout
        )),
    );
    transcript::check(
        &format!("{number}_server"),
        &received_in_port_order(&normal.apply(&format!(
            "$ cargo run --bin {lesson}_server\n{}",
            as_in_terminal(&exited.stdout)
        ))),
    );
}

/// The client sends each line on its three connections at once, so a server may
/// take them in any order (io_uring's completions do not keep one): each run of
/// `received` lines of the same message is put in order of the (normalised) client
/// ports, as the book shows it.
fn received_in_port_order(text: &str) -> String {
    let message = |line: &str| line.rsplit_once(": ").map(|(_, said)| said.to_string());
    let mut out: Vec<&str> = Vec::new();
    let mut run: Vec<&str> = Vec::new();
    for line in text.lines() {
        let same_message = run
            .last()
            .is_some_and(|last| message(last) == message(line));
        if line.starts_with(workbook::log::RECEIVED) && (run.is_empty() || same_message) {
            run.push(line);
            continue;
        }
        run.sort();
        out.append(&mut run);
        if line.starts_with(workbook::log::RECEIVED) {
            run.push(line);
        } else {
            out.push(line);
        }
    }
    run.sort();
    out.append(&mut run);
    let mut joined = out.join("\n");
    if text.ends_with('\n') {
        joined.push('\n');
    }
    joined
}

/// Three connections held idle by the lesson's client (`--hold 30`) do not delay a
/// fourth client, and Ctrl-C closes them: the book's `NN_hold`.
pub fn held_clients_transcript(lesson: &str, server_exe: &str, client_exe: &str, port: u16) {
    let number = &lesson[..2];
    let mut server = Server::start(server_exe, &[]);
    let real_port = server.port().to_string();
    let mut holder =
        Interactive::start(client_exe, &["--port", &real_port, "--hold", "30", "late"]);
    assert_eq!(holder.expect_line(), "holding 3 idle connections for 30 s");
    for _ in 0..3 {
        server.wait_for_line(workbook::log::CONNECTED);
    }
    let other = run(
        client_exe,
        &["--port", &real_port, "--conns", "1", "not waiting"],
        b"",
    );
    assert!(other.status.success(), "{}", other.stderr);
    assert!(
        other.stdout.ends_with("): not waiting\n"),
        "the client printed:\n{}",
        other.stdout
    );
    server.wait_for_line(workbook::log::DISCONNECTED);
    // Stopped while the idle connections are still open: it closes them itself.
    let exited = server.stop(SIGINT);
    assert_clean_shutdown(&exited);
    drop(holder);
    let normal = transcript::Normaliser::new()
        .port(exited.listening_port(), port)
        .pattern(TIMING_COUNTS, TIMING_COUNTS_SHOWN);
    transcript::check(
        &format!("{number}_hold"),
        &normal.apply(&format!(
            "# terminal 2: three connections that stay idle\n\
             $ cargo run --bin {lesson}_client -- --hold 30 late\n\
             holding 3 idle connections for 30 s\n\
             \n\
             # terminal 3, meanwhile: served at once\n\
             $ cargo run --bin {lesson}_client -- --conns 1 \"not waiting\"\n\
             {}\n\
             # terminal 1: the server, stopped with Ctrl-C while terminal 2 still holds\n\
             $ cargo run --bin {lesson}_server\n\
             {}",
            other.stdout,
            as_in_terminal(&exited.stdout)
        )),
    );
}

/// SIGTERM with two clients connected: the server closes both (each reads EOF) and
/// stops cleanly.
pub fn sigterm_closes_open_connections(server_exe: &str) {
    let mut server = Server::start(server_exe, &[]);
    let mut a = connect(server.addr);
    let mut b = connect(server.addr);
    round_trip(&mut a, b"one\n");
    round_trip(&mut b, b"two\n");
    server.wait_for_line(workbook::log::RECEIVED);
    let exited = server.stop(SIGTERM);
    assert_clean_shutdown(&exited);
    assert_same_bytes(&read_to_eof(&mut a), b"", "connection a after SIGTERM");
    assert_same_bytes(&read_to_eof(&mut b), b"", "connection b after SIGTERM");
}

/// Many small round trips on one connection, each one a `received` line in the log:
/// about 2 MB of log in a second or two.
pub fn many_small_round_trips(addr: SocketAddr) {
    let mut stream = connect(addr);
    for round in 0..20_000 {
        round_trip(&mut stream, format!("{round:09}\n").as_bytes());
    }
}

/// Counts in a last line that depend on timing, not on what the clients did: lesson
/// 19's batching (how many completions one io_uring_enter brought back). Transcripts
/// show them as N and M.
const TIMING_COUNTS: &str = r"\d+ io_uring_enter calls? for \d+ completions?";
const TIMING_COUNTS_SHOWN: &str = "N io_uring_enter calls for M completions";

/// A server that echoes the client's line, then, after the client's half-close,
/// keeps sending (up to 64 MiB, then closes). The client must not keep what it gets
/// (it once read it all into memory, 4 GB in a review's run): it stops at the first
/// read with bytes in it and says how many that read brought.
pub fn client_stops_at_bytes_after_the_half_close(client_exe: &str) {
    const HOSE: usize = 64 << 20;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let hose = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut line = [0u8; 3];
        stream.read_exact(&mut line).unwrap();
        stream.write_all(&line).unwrap();
        let chunk = vec![b'x'; 1 << 20];
        let mut sent = 0;
        // Ends when the client closes (the write fails) or after HOSE bytes.
        while sent < HOSE && stream.write_all(&chunk).is_ok() {
            sent += chunk.len();
        }
        sent
    });
    let exited = run(client_exe, &["--port", &port, "--conns", "1", "hi"], b"");
    assert!(!exited.status.success(), "{}", exited.stdout);
    let said = exited
        .stderr
        .lines()
        .find(|line| line.contains("unexpected bytes after the last echo"))
        .unwrap_or_else(|| panic!("no word of the extra bytes: {}", exited.stderr));
    let count: usize = said
        .split_whitespace()
        .find_map(|word| word.parse().ok())
        .unwrap_or_else(|| panic!("no count in {said:?}"));
    assert!(
        (1..=64 * 1024).contains(&count),
        "one read's worth expected: {said}"
    );
    let sent = hose.join().unwrap();
    assert!(sent < HOSE, "the client read all {sent} bytes");
}
