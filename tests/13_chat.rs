//! Lesson 13: the chat room, run as a real program and joined by real clients: our
//! own, `nc`, Python's socket module, and raw sockets for what no polite client sends.

mod support;

/// The lesson's line reader, so that its unit tests run with this file's.
#[path = "../lessons/13_chat/lines.rs"]
#[allow(dead_code)]
mod lines;
/// ... and its room, for the tests of the queue (`mod queue` below).
#[path = "../lessons/13_chat/room.rs"]
#[allow(dead_code)]
mod room;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};

use support::transcript::{self, Normaliser};
use support::*;
use workbook::log;

const SERVER: &str = env!("CARGO_BIN_EXE_13_chat_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_13_chat_client");
const WORKBOOK: &str = env!("CARGO_BIN_EXE_workbook");
const DEFAULT_PORT: u16 = 10013;
const ASK_NAME: &str = "* what is your name? (1-24 letters, digits, _ or -)";

/// A raw client of the room that reads whole lines, each within [`WAIT`].
struct Raw {
    stream: TcpStream,
    pending: Vec<u8>,
    seen: Vec<String>,
}

impl Raw {
    /// Connects and reads the question for a name.
    fn connect(addr: SocketAddr) -> Raw {
        let mut raw = Raw::on(connect(addr));
        raw.expect(ASK_NAME);
        raw
    }

    fn on(stream: TcpStream) -> Raw {
        Raw {
            stream,
            pending: Vec::new(),
            seen: Vec::new(),
        }
    }

    /// Connects and takes `name`; returns the welcome line.
    fn join(addr: SocketAddr, name: &str) -> (Raw, String) {
        let mut raw = Raw::connect(addr);
        raw.send(name);
        let welcome = raw.line();
        assert!(
            welcome.starts_with(&format!("* welcome {name}; here: ")),
            "{welcome:?}"
        );
        (raw, welcome)
    }

    fn send(&mut self, line: &str) {
        self.send_bytes(format!("{line}\n").as_bytes());
    }

    fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next line; fails the test if none comes within WAIT.
    fn line(&mut self) -> String {
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                let text = String::from_utf8(line[..end].to_vec())
                    .unwrap_or_else(|_| panic!("not UTF-8: \"{}\"", escaped(&line)));
                self.seen.push(text.clone());
                return text;
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("the server closed; lines so far: {:?}", self.seen),
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                // A signal reached this test process while it waited (EINTR).
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => panic!("no line ({err}); lines so far: {:?}", self.seen),
            }
        }
    }

    fn expect(&mut self, want: &str) {
        let got = self.line();
        assert_eq!(got, want, "lines so far: {:?}", self.seen);
    }

    /// Reads to the server's close; returns the lines that came before it.
    fn lines_to_close(&mut self) -> Vec<String> {
        let rest = read_until_closed(&mut self.stream, WAIT)
            .unwrap_or_else(|| panic!("the server did not close; lines so far: {:?}", self.seen));
        self.pending.extend_from_slice(&rest);
        String::from_utf8_lossy(&self.pending)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// What a terminal shows: the lines received, with the lines typed put in before
/// the received line they came before (by index).
fn typed_into(received: &[String], typed: &[(usize, &str)]) -> String {
    let mut shown = Vec::new();
    for (at, line) in received.iter().enumerate() {
        shown.extend(
            typed
                .iter()
                .filter(|(i, _)| *i == at)
                .map(|(_, t)| t.to_string()),
        );
        shown.push(line.clone());
    }
    shown.join("\n")
}

/// What waits unread in the server's socket connected to `client_port` (its
/// `rx_queue` in /proc/net/tcp), or `None` if there is no such connection.
fn server_side_rx_queue(server_port: u16, client_port: u16) -> Option<usize> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!("0100007F:{server_port:04X}");
    let remote = format!("0100007F:{client_port:04X}");
    table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        // local_address, rem_address, st, tx_queue:rx_queue
        .find(|fields| fields.len() > 4 && fields[1] == local && fields[2] == remote)
        .and_then(|fields| fields[4].split(':').nth(1).map(str::to_string))
        .and_then(|rx| usize::from_str_radix(&rx, 16).ok())
}

fn normaliser(port: u16) -> Normaliser {
    Normaliser::new().port(port, DEFAULT_PORT)
}

mod queue {
    //! The bounded queue of lines for one client (room.rs), on its own.
    use super::room::{MAX_QUEUED_BYTES, MAX_QUEUED_LINES, Outbox};
    use std::io::{self, Write};

    /// A peer that takes at most `per_write` bytes per write, then says WouldBlock
    /// once every `block_every` writes.
    struct Slow {
        taken: Vec<u8>,
        per_write: usize,
        writes: usize,
        block_every: usize,
    }

    impl Write for Slow {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.writes += 1;
            if self.writes % self.block_every == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = data.len().min(self.per_write);
            self.taken.extend_from_slice(&data[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_go_out_whole_and_in_order_across_partial_writes() {
        let mut outbox = Outbox::new();
        let mut peer = Slow {
            taken: Vec::new(),
            per_write: 3,
            writes: 0,
            block_every: 4,
        };
        let mut want = Vec::new();
        for i in 0..20 {
            let line = format!("<ada> line {i}");
            assert!(outbox.push(&line));
            want.extend_from_slice(line.as_bytes());
            want.push(b'\n');
        }
        while !outbox.is_empty() {
            outbox.write_to(&mut peer).unwrap();
        }
        crate::support::assert_same_bytes(&peer.taken, &want, "what the peer got");
    }

    #[test]
    fn a_full_queue_refuses_the_whole_line() {
        let mut outbox = Outbox::new();
        for _ in 0..MAX_QUEUED_LINES {
            assert!(outbox.push("x"));
        }
        assert!(!outbox.push("x"), "more than MAX_QUEUED_LINES lines");
        let mut outbox = Outbox::new();
        let line = "y".repeat(1023);
        for _ in 0..MAX_QUEUED_BYTES / 1024 {
            assert!(outbox.push(&line));
        }
        assert!(!outbox.push("z"), "more than MAX_QUEUED_BYTES bytes");
        // Once the peer reads, there is room again.
        let mut peer = Slow {
            taken: Vec::new(),
            per_write: 4096,
            writes: 0,
            block_every: usize::MAX,
        };
        outbox.write_to(&mut peer).unwrap();
        assert!(outbox.is_empty());
        assert!(outbox.push("z"));
    }
}

mod protocol {
    //! The wire protocol, checked by the code `cargo run -- check 13` runs.
    use super::*;

    #[test]
    fn all_checks_pass() {
        support::protocol::all_checks_pass(13, SERVER, &[]);
    }

    #[test]
    fn all_checks_pass_quiet() {
        support::protocol::all_checks_pass(13, SERVER, &["--quiet"]);
    }
}

mod lesson {
    use super::*;

    // Our client.

    #[test]
    fn three_clients_chat_through_the_real_client() {
        let mut server = Server::start(SERVER, &[]);
        let port = server.port().to_string();
        let mut ada = Interactive::start(CLIENT, &["--port", &port, "--name", "ada"]);
        assert_eq!(ada.expect_line(), ASK_NAME);
        assert_eq!(ada.expect_line(), "* welcome ada; here: ada");
        let mut bob = Interactive::start(CLIENT, &["--port", &port, "--name", "bob"]);
        assert_eq!(bob.expect_line(), ASK_NAME);
        assert_eq!(bob.expect_line(), "* welcome bob; here: ada, bob");
        assert_eq!(ada.expect_line(), "* bob joined");
        let (mut cy, welcome) = Raw::join(server.addr, "cy");
        assert_eq!(welcome, "* welcome cy; here: ada, bob, cy");
        assert_eq!(ada.expect_line(), "* cy joined");
        assert_eq!(bob.expect_line(), "* cy joined");

        ada.send_line("hello, both of you");
        assert_eq!(bob.expect_line(), "<ada> hello, both of you");
        cy.expect("<ada> hello, both of you");
        cy.send("/msg bob only for you");
        assert_eq!(bob.expect_line(), "*cy* only for you");
        bob.send_line("/me waves");
        assert_eq!(ada.expect_line(), "* bob waves");
        assert_eq!(bob.expect_line(), "* bob waves");
        cy.expect("* bob waves");
        // Ctrl-D: bob's client half-closes; the server sees him leave and closes.
        let bob_exited = bob.finish();
        assert!(bob_exited.status.success(), "{}", bob_exited.stderr);
        assert_eq!(ada.expect_line(), "* bob left");
        cy.expect("* bob left");
        cy.send("/quit bedtime");
        cy.expect("* bye");
        assert!(cy.lines_to_close().is_empty());
        assert_eq!(ada.expect_line(), "* cy left (bedtime)");
        // Ada saw nothing of the private message, and none of her own lines.
        assert!(!ada.seen.iter().any(|l| l.contains("only for you")));
        assert!(!ada.seen.iter().any(|l| l.starts_with("<ada>")));
        let ada_exited = ada.finish();
        assert!(ada_exited.status.success(), "{}", ada_exited.stderr);
        server.wait_for_line("(ada): left");
        assert_clean_shutdown(&server.stop(SIGINT));
    }

    #[test]
    fn client_sends_its_arguments_and_ends_when_the_server_closes() {
        let mut server = Server::start(SERVER, &[]);
        let port = server.port().to_string();
        let (mut ada, _) = Raw::join(server.addr, "ada");
        let said = run(
            CLIENT,
            &[
                "--port",
                &port,
                "--name",
                "bob",
                "hello, room",
                "/who",
                "/help",
            ],
            b"",
        );
        assert!(said.status.success(), "{}", said.stderr);
        ada.expect("* bob joined");
        ada.expect("<bob> hello, room");
        ada.expect("* bob left");
        ada.send("/quit");
        ada.expect("* bye");
        server.wait_for_line("(ada): left");
        let exited = server.stop(SIGINT);
        assert_clean_shutdown(&exited);
        transcript::check(
            "13_client",
            &normaliser(exited.listening_port()).apply(&format!(
                "# terminal 2: ada, in nc (she types `ada`, later `/quit`)\n\
                 $ nc 127.0.0.1 10013\n\
                 {}\n\
                 # terminal 3\n\
                 $ cargo run --bin 13_chat_client -- --name bob \"hello, room\" /who /help\n\
                 {}\
                 # terminal 1: the server, stopped with Ctrl-C afterwards\n\
                 $ cargo run --bin 13_chat_server\n\
                 {}",
                typed_into(&ada.seen, &[(1, "ada"), (5, "/quit")]),
                said.stdout,
                exited
                    .stdout
                    .replace("\nshutting down", "\n^Cshutting down")
            )),
        );
    }

    #[test]
    fn piped_stdin_is_sent_line_by_line_and_a_taken_name_is_asked_again() {
        let server = Server::start(SERVER, &[]);
        let port = server.port().to_string();
        let (mut ada, _) = Raw::join(server.addr, "ada");
        let said = run(
            CLIENT,
            &["--port", &port],
            "Ada\n小明\n你好\r\n/nick ming\n/who\n".as_bytes(),
        );
        assert!(said.status.success(), "{}", said.stderr);
        assert_eq!(
            said.stdout,
            format!(
                "{ASK_NAME}\n\
                 * the name Ada is taken\n\
                 {ASK_NAME}\n\
                 * welcome 小明; here: ada, 小明\n\
                 * 小明 is now known as ming\n\
                 * here: ada, ming\n"
            )
        );
        ada.expect("* 小明 joined");
        ada.expect("<小明> 你好");
        ada.expect("* 小明 is now known as ming");
        ada.expect("* ming left");
    }

    #[test]
    fn names_in_any_script_and_what_is_refused() {
        let server = Server::start(SERVER, &[]);
        let (mut ada, _) = Raw::join(server.addr, "ada");
        let mut newcomer = Raw::connect(server.addr);
        for (name, why) in [
            ("", "* a name needs at least one character"),
            (
                "two words",
                "* ' ' cannot be in a name: only letters, digits, _ and -",
            ),
            (
                "<ada>",
                "* '<' cannot be in a name: only letters, digits, _ and -",
            ),
            (
                "١٢",
                "* '١' cannot be in a name: only letters, digits, _ and -",
            ),
            (
                &"é".repeat(25),
                "* a name has at most 24 characters, not 25",
            ),
            ("ADA", "* the name ADA is taken"),
        ] {
            newcomer.send(name);
            newcomer.expect(why);
            newcomer.expect(ASK_NAME);
        }
        // 24 letters of two bytes each: 48 bytes, and still a name.
        let long = "é".repeat(24);
        newcomer.send(&long);
        newcomer.expect(&format!("* welcome {long}; here: ada, {long}"));
        ada.expect(&format!("* {long} joined"));
        for name in ["Zoë", "r2-d2", "__", "Ωμέγα"] {
            let (_, welcome) = Raw::join(server.addr, name);
            assert!(welcome.ends_with(&format!(", {name}")), "{welcome}");
        }
    }

    #[test]
    fn the_client_prints_what_arrives_while_it_waits_for_stdin() {
        let server = Server::start(SERVER, &[]);
        let port = server.port().to_string();
        let mut ada = Interactive::start(CLIENT, &["--port", &port, "--name", "ada"]);
        assert_eq!(ada.expect_line(), ASK_NAME);
        assert_eq!(ada.expect_line(), "* welcome ada; here: ada");
        // Ada types nothing; what others say still shows at once.
        let (mut bob, _) = Raw::join(server.addr, "bob");
        bob.send("are you there?");
        assert_eq!(ada.expect_line(), "* bob joined");
        assert_eq!(ada.expect_line(), "<bob> are you there?");
        // The server going away ends the client, although stdin is still open.
        let exited = server.stop(SIGINT);
        assert_clean_shutdown(&exited);
        assert_eq!(ada.expect_line(), "* server shutting down");
        let ada_exited = ada.finish();
        assert!(ada_exited.status.success(), "{}", ada_exited.stderr);
    }

    #[test]
    fn on_a_terminal_the_prompt_shows_and_lines_replace_it() {
        // script(1) runs the client on a pseudo-terminal: stdin and stdout are a tty.
        if !tool_available("script", &["--version"]) {
            return;
        }
        let server = Server::start(SERVER, &[]);
        let command = format!("{CLIENT} --port {} --name tty", server.port());
        // `/who`, then Ctrl-D (end of input at the start of a line on a terminal).
        let ran = run("script", &["-qc", &command, "/dev/null"], b"/who\n\x04");
        assert!(ran.status.success(), "{}", ran.stderr);
        // (The terminal echoes `/who` too, wherever it comes in the output.)
        // Each line from the server erases the prompt (`\r`, then ESC [ K) and shows
        // it again after itself.
        assert!(
            ran.stdout.contains("\r\x1b[K* here: tty\r\n> "),
            "{:?}",
            ran.stdout
        );
        // At the end the last prompt is erased too: the shell's prompt does not come
        // after a `> ` on the same line.
        assert!(ran.stdout.ends_with("\r\x1b[K"), "{:?}", ran.stdout);
    }

    #[test]
    fn with_stdout_in_a_file_no_prompt_goes_into_it() {
        if !tool_available("script", &["--version"]) {
            return;
        }
        let server = Server::start(SERVER, &[]);
        let file = std::env::temp_dir().join(format!("13-prompt-{}.txt", std::process::id()));
        let command = format!(
            "{CLIENT} --port {} --name tty > {}",
            server.port(),
            file.display()
        );
        // stdin is the terminal, stdout the file.
        let ran = run("script", &["-qc", &command, "/dev/null"], b"/who\n\x04");
        assert!(ran.status.success(), "{}", ran.stderr);
        let logged = std::fs::read_to_string(&file).unwrap_or_default();
        let _ = std::fs::remove_file(&file);
        assert_eq!(
            logged,
            format!("{ASK_NAME}\n* welcome tty; here: tty\n* here: tty\n")
        );
    }

    #[test]
    fn a_refused_name_stops_the_client_before_its_messages() {
        let server = Server::start(SERVER, &[]);
        let port = server.port().to_string();
        let (mut ada, _) = Raw::join(server.addr, "ada");
        let said = run(
            CLIENT,
            &["--port", &port, "--name", "Ada", "hello", "/who"],
            b"",
        );
        assert!(!said.status.success(), "{}", said.stdout);
        assert!(
            said.stderr
                .contains("error: the server refused the name Ada"),
            "{}",
            said.stderr
        );
        assert!(
            said.stdout.contains("* the name Ada is taken"),
            "{}",
            said.stdout
        );
        // `hello` was not sent as a name, nor as anything else.
        ada.send("/who");
        ada.expect("* here: ada");
    }

    #[test]
    fn the_client_gives_up_on_a_server_that_never_reads() {
        // A "server" that accepts (the kernel does) and never reads.
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        socket.listen(1).unwrap();
        let port = socket
            .local_addr()
            .unwrap()
            .as_socket()
            .unwrap()
            .port()
            .to_string();
        // 16 MB of lines: more than both sockets' buffers hold.
        let line = format!("{}\n", "x".repeat(1000));
        let input = line.repeat(16 * 1024);
        // (No --name: the client would first wait 5 s for the answer to it.)
        let said = run(CLIENT, &["--port", &port], input.as_bytes());
        assert_eq!(said.status.code(), Some(1), "{}", said.stderr);
        assert!(
            said.stderr
                .contains("error: the server took nothing more of our lines for 5 s"),
            "{}",
            said.stderr
        );
        drop(socket);
    }

    #[test]
    fn contract_client() {
        contract::client_reports_no_server(CLIENT, "13_chat_server", &["--name", "ada"]);
        contract::rejects_bad_flags(CLIENT);
        let server = Server::start(SERVER, &[]);
        let port = server.port().to_string();
        let exited = run_with_closed_stdout(CLIENT, &["--port", &port, "ada", "/who"], b"");
        assert_quiet_stop(&exited, "13_chat_client with stdout closed");
    }

    // Clients this project did not write.

    #[test]
    fn nc_joins_and_chats() {
        if !tool_available("nc", &["-h"]) {
            return;
        }
        let server = Server::start(SERVER, &[]);
        let (mut ada, _) = Raw::join(server.addr, "ada");
        // -N: shut down the socket's sending side when stdin ends (our half-close).
        let mut nc = Command::new("nc")
            .args(["-N", "127.0.0.1", &server.port().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        nc.stdin
            .take()
            .unwrap()
            .write_all(b"netcat\nhello from nc\n/who\n")
            .unwrap();
        let mut out = String::new();
        nc.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        assert!(nc.wait().unwrap().success());
        assert_eq!(
            out,
            format!("{ASK_NAME}\n* welcome netcat; here: ada, netcat\n* here: ada, netcat\n")
        );
        ada.expect("* netcat joined");
        ada.expect("<netcat> hello from nc");
        ada.expect("* netcat left");
    }

    #[test]
    fn python_socket_client_joins_and_chats() {
        if !tool_available("python3", &["--version"]) {
            return;
        }
        let server = Server::start(SERVER, &[]);
        let (mut ada, _) = Raw::join(server.addr, "ada");
        let script = r#"
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
f = s.makefile("rwb")
def line():
    return f.readline().decode("utf-8").rstrip("\n")
print(line())
f.write("Łucja\n".encode()); f.flush()
print(line())
f.write("/msg ada cześć\n".encode()); f.flush()
f.write(b"/quit\n"); f.flush()
print(line())
print(repr(f.read()))
"#;
        let port = server.port().to_string();
        let python = run("python3", &["-c", script, &port], b"");
        assert!(python.status.success(), "{}", python.stderr);
        assert_eq!(
            python.stdout,
            format!("{ASK_NAME}\n* welcome Łucja; here: ada, Łucja\n* bye\nb''\n")
        );
        ada.expect("* Łucja joined");
        ada.expect("*Łucja* cześć");
        ada.expect("* Łucja left");
    }

    // The room's limits.

    #[test]
    fn a_megabyte_without_a_line_end_is_answered_once_and_skipped() {
        let mut server = Server::start(SERVER, &[]);
        let (mut ada, _) = Raw::join(server.addr, "ada");
        let (mut bob, _) = Raw::join(server.addr, "bob");
        ada.expect("* bob joined");
        let before = server.rss_kib();
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..16 {
            bob.send_bytes(&chunk);
        }
        bob.send_bytes(b"\nstill here\n");
        bob.expect("* line too long (max 4096 bytes)");
        ada.expect("<bob> still here");
        bob.send("/who");
        bob.expect("* here: ada, bob");
        // The megabyte was thrown away as it came, not kept.
        let after = server.rss_kib();
        assert!(
            after < before + 512,
            "RSS grew from {before} KiB to {after} KiB"
        );
        let _ = server.drain();
    }

    #[test]
    fn a_client_that_never_reads_is_dropped_while_the_others_chat() {
        let mut server = Server::start(SERVER, &[]);
        let (mut ada, _) = Raw::join(server.addr, "ada");
        let (mut bob, _) = Raw::join(server.addr, "bob");
        ada.expect("* bob joined");
        // Zed's receive buffer is small and he never reads after his welcome.
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&server.addr.into()).unwrap();
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut zed = Raw::on(stream);
        zed.expect(ASK_NAME);
        zed.send("zed");
        zed.line();
        ada.expect("* zed joined");
        bob.expect("* zed joined");
        // Bob talks in batches; Ada reads each one before the next (bounded: 16 MiB).
        let text = "z".repeat(1000);
        let mut dropped = false;
        for batch in 0..512 {
            let lines: String = (0..32).map(|i| format!("{batch}.{i} {text}\n")).collect();
            bob.send_bytes(lines.as_bytes());
            loop {
                let line = ada.line();
                if line == "* zed dropped (not reading)" {
                    dropped = true;
                } else if line == format!("<bob> {batch}.31 {text}") {
                    break;
                } else {
                    assert!(line.starts_with("<bob> "), "{line:?}");
                }
            }
            if dropped {
                break;
            }
        }
        assert!(dropped, "zed was never dropped");
        bob.expect("* zed dropped (not reading)");
        // The room goes on.
        bob.send("anyone still here?");
        ada.expect("<bob> anyone still here?");
        ada.send("/who");
        ada.expect("* here: ada, bob");
        wait_for_word_about(
            &mut server,
            log::DISCONNECTED,
            "(zed): dropped (not reading)",
        );
        // Zed's socket is closed: after the lines he had, he reads the end.
        assert!(read_until_closed(&mut zed.stream, WAIT).is_some());
    }

    #[test]
    fn no_descriptor_or_thread_leak_after_100_clients() {
        let server = Server::start(SERVER, &["--quiet"]);
        let (mut ada, _) = Raw::join(server.addr, "ada");
        let (fds, threads) = (server.open_fds(), server.threads());
        for i in 0..100 {
            let mut raw = Raw::connect(server.addr);
            match i % 4 {
                // Joins, talks, and quits.
                0 => {
                    raw.send(&format!("guest{i}"));
                    raw.line();
                    raw.send("hi");
                    raw.send("/quit");
                    let _ = raw.lines_to_close();
                }
                // Joins and closes without a word.
                1 => {
                    raw.send(&format!("guest{i}"));
                    raw.line();
                }
                // Resets in the middle of a line.
                2 => {
                    raw.send_bytes(b"guest");
                    reset(raw.stream);
                }
                // Never says a name.
                _ => {}
            }
        }
        // Ada's /who answers after every departure the server has seen: ask until
        // the room is hers alone (the last closes may still be on their way).
        let settled = support::echo::eventually(|| {
            ada.send("/who");
            loop {
                let line = ada.line();
                if line.starts_with("* here: ") {
                    return line == "* here: ada";
                }
            }
        });
        assert!(
            settled,
            "lines: {:?}",
            ada.seen.iter().rev().take(5).collect::<Vec<_>>()
        );
        let closed = support::echo::eventually(|| server.open_fds() == fds);
        assert!(
            closed,
            "descriptors: {fds} before, {} after 100 clients",
            server.open_fds()
        );
        assert_eq!(server.threads(), threads, "threads before and after");
        let exited = server.stop(SIGINT);
        assert_clean_shutdown(&exited);
        assert!(
            exited
                .stdout
                .contains("served 101 clients, closed 1 connection still open"),
            "{}",
            exited.stdout
        );
    }

    #[test]
    fn a_paste_of_a_thousand_lines_reaches_a_reader_that_keeps_up() {
        let server = Server::start(SERVER, &["--quiet"]);
        let (mut ada, _) = Raw::join(server.addr, "ada");
        let (mut bob, _) = Raw::join(server.addr, "bob");
        ada.expect("* bob joined");
        // One write, most likely one read at the server: 1,000 lines for Ada's queue
        // (bound: 256 lines) and 40 /help (280 lines) for Bob's own, in one round.
        let mut paste: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        paste.push_str(&"/help\n".repeat(40));
        bob.send_bytes(paste.as_bytes());
        for i in 0..1000 {
            ada.expect(&format!("<bob> line {i}"));
        }
        for _ in 0..40 {
            bob.expect("* commands:");
            for _ in 0..6 {
                let line = bob.line();
                assert!(line.starts_with("*   /"), "{line:?}");
            }
        }
        // Neither was dropped.
        ada.send("/who");
        ada.expect("* here: ada, bob");
        bob.send("/who");
        bob.expect("* here: ada, bob");
    }

    #[test]
    fn a_name_is_not_free_before_the_room_hears_its_owner_left() {
        let mut server = Server::start(SERVER, &[]);
        let (ada, _) = Raw::join(server.addr, "ada");
        let (mut bob, _) = Raw::join(server.addr, "bob");
        let (mut cy, _) = Raw::join(server.addr, "cy");
        let mut newcomer = Raw::connect(server.addr);
        bob.expect("* cy joined");
        // Both in one round: the server is stopped while Ada resets, Bob asks for her
        // name and the newcomer gives it.
        let pid = nix::unistd::Pid::from_raw(server.pid() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
        let stopped = support::echo::eventually(|| process_state(server.pid()) == Some('T'));
        assert!(stopped, "the server did not stop");
        let port = |raw: &Raw| raw.stream.local_addr().unwrap().port();
        let (ada_port, bob_port, newcomer_port) = (port(&ada), port(&bob), port(&newcomer));
        reset(ada.stream);
        bob.send("/nick ada");
        newcomer.send("ada");
        // Everything is at the server before it goes on (loopback may deliver late
        // under load): Ada's socket there is reset (gone from the table), the two
        // lines wait in the others' receive queues.
        let arrived = support::echo::eventually(|| {
            server_side_rx_queue(server.port(), ada_port).is_none()
                && server_side_rx_queue(server.port(), bob_port) == Some(10)
                && server_side_rx_queue(server.port(), newcomer_port) == Some(4)
        });
        assert!(
            arrived,
            "the reset and the two lines did not all reach the server"
        );
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
        bob.expect("* the name ada is taken");
        newcomer.expect("* the name ada is taken");
        newcomer.expect(ASK_NAME);
        cy.expect("* ada left");
        // Now it is free.
        newcomer.send("ada");
        newcomer.expect("* welcome ada; here: bob, cy, ada");
        cy.expect("* ada joined");
        wait_for_word_about(&mut server, log::DISCONNECTED, "(ada): connection lost");
    }

    #[test]
    fn the_list_of_names_fits_in_a_line() {
        let server = Server::start(SERVER, &["--quiet"]);
        // 60 names of 24 four-byte letters: about 6 KB written out.
        let name = |i: usize| format!("{}{i:02}", "𝔞".repeat(22));
        let members: Vec<Raw> = (0..60)
            .map(|i| Raw::join(server.addr, &name(i)).0)
            .collect();
        let (mut last, welcome) = Raw::join(server.addr, "last");
        assert!(welcome.len() <= 4096, "{} bytes: {welcome}", welcome.len());
        // `a, b, and 58 more`: as many ", " as names shown.
        let shown = welcome.matches(", ").count();
        assert!(
            welcome.ends_with(&format!(", and {} more", 61 - shown)),
            "{welcome}"
        );
        last.send("/who");
        let who = last.line();
        assert!(who.starts_with("* here: "), "{who}");
        assert!(who.len() <= 4096, "{} bytes: {who}", who.len());
        assert!(who.ends_with(" more"), "{who}");
        drop(members);
    }

    #[test]
    fn out_of_descriptors_and_then_not_the_room_does_not_spin() {
        if !strace_works_with(&["-D", "-f", "-qq", "-o", "/dev/null"]) {
            return;
        }
        let trace = std::env::temp_dir().join(format!("13-emfile-{}.txt", std::process::id()));
        let trace_path = trace.to_string_lossy().into_owned();
        // -D: the process started is the server itself; strace traces it from aside.
        let mut server = Server::start_with_fd_limit(
            "strace",
            &[
                "-D",
                "-f",
                "-qq",
                "-e",
                "trace=poll",
                "-o",
                &trace_path,
                SERVER,
            ],
            64,
        );
        support::echo::crowd_past_fd_limit(&mut server);
        // Accepting again (the pause is over), then some rounds of chat.
        let (mut ada, _) = Raw::join(server.addr, "ada");
        let (mut bob, _) = Raw::join(server.addr, "bob");
        ada.expect("* bob joined");
        for i in 0..20 {
            bob.send(&format!("round {i}"));
            ada.expect(&format!("<bob> round {i}"));
        }
        let exited = server.stop(SIGINT);
        assert_clean_shutdown(&exited);
        // strace writes each line as its call returns; the server has exited.
        let text = std::fs::read_to_string(&trace).unwrap_or_default();
        let _ = std::fs::remove_file(&trace);
        // The loop's polls (the wake-up socket is always watched for POLLIN) that were
        // told not to wait at all: once accepting resumed, none should be.
        let polls: Vec<&str> = text
            .lines()
            .filter(|line| line.contains("poll(") && line.contains("POLLIN"))
            .collect();
        let not_waiting = polls
            .iter()
            .filter(|line| line.contains("], ") && line.contains(", 0) "))
            .count();
        assert!(polls.len() > 20, "strace saw {} polls", polls.len());
        assert!(
            not_waiting <= 2,
            "{not_waiting} of {} polls had timeout 0 (the loop spins); the last: {:?}",
            polls.len(),
            polls.last()
        );
    }

    #[test]
    fn out_of_descriptors_the_room_waits_and_goes_on() {
        let mut server = Server::start_with_fd_limit(SERVER, &[], 64);
        support::echo::crowd_past_fd_limit(&mut server);
        let (mut ada, _) = Raw::join(server.addr, "ada");
        let (_bob, _) = Raw::join(server.addr, "bob");
        ada.expect("* bob joined");
        assert!(server.is_running());
    }

    #[test]
    fn sigint_tells_everyone_and_closes_even_with_a_client_that_does_not_read() {
        let server = Server::start(SERVER, &[]);
        let (mut ada, _) = Raw::join(server.addr, "ada");
        let (mut bob, _) = Raw::join(server.addr, "bob");
        ada.expect("* bob joined");
        let mut nameless = Raw::connect(server.addr);
        // Carol's receive buffer is small, and she never reads: her socket's buffers
        // fill up, and the rest waits in her queue at the server.
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&server.addr.into()).unwrap();
        let mut carol = Raw::on(socket.into());
        carol.send("carol");
        ada.expect("* carol joined");
        bob.expect("* carol joined");
        // 50 KB: more than her socket holds, less than her queue's bound.
        for i in 0..50 {
            ada.send(&format!("line {i} {}", "y".repeat(1000)));
        }
        for i in 0..50 {
            bob.expect(&format!("<ada> line {i} {}", "y".repeat(1000)));
        }
        let exited = server.stop(SIGINT);
        assert_clean_shutdown(&exited);
        assert!(
            exited.stdout.contains("closed 4 connections still open"),
            "{}",
            exited.stdout
        );
        for raw in [&mut ada, &mut bob, &mut nameless] {
            raw.expect("* server shutting down");
            assert!(raw.lines_to_close().is_empty());
        }
    }

    // The bot.

    #[test]
    fn the_menu_bot_answers_each_client_on_its_own() {
        let mut server = Server::start(SERVER, &["--bot"]);
        let menu = "* menu: 1 = the first game, 2 = the second game, exit = leave";
        let mut one = Raw::on(connect(server.addr));
        let mut two = Raw::on(connect(server.addr));
        one.expect(menu);
        two.expect(menu);
        two.send("2");
        two.expect("* you chose the second game");
        for line in ["1", "2", "3"] {
            one.send(line);
        }
        one.send_bytes(b"exit\r\n");
        let rest = one.lines_to_close();
        two.send("exit");
        two.expect("* goodbye");
        let exited = {
            let _ = two.lines_to_close();
            server.wait_for_line("disconnected");
            server.wait_for_line("disconnected");
            server.stop(SIGINT)
        };
        assert_clean_shutdown(&exited);
        let conversation: Vec<String> = one.seen.iter().chain(&rest).cloned().collect();
        transcript::check(
            "13_bot",
            &normaliser(exited.listening_port()).apply(&format!(
                "# terminal 2: typing 1, 2, 3, exit\n\
                 $ nc 127.0.0.1 10013\n\
                 {}\n",
                typed_into(&conversation, &[(1, "1"), (2, "2"), (3, "3"), (5, "exit")])
            )),
        );
        assert_eq!(
            conversation,
            [
                menu,
                "* you chose the first game",
                "* you chose the second game",
                "* that is not on the menu; choose again",
                menu,
                "* goodbye"
            ]
        );
    }

    // The contract.

    #[test]
    fn contract_server() {
        contract::server_reports_port_in_use(SERVER, &[]);
        contract::server_reports_bad_host(SERVER);
        contract::rejects_bad_flags(SERVER);
        contract::server_stops_on(SERVER, &[], SIGINT);
        contract::server_stops_on(SERVER, &["--quiet"], SIGTERM);
        contract::server_stops_on(SERVER, &["--bot"], SIGTERM);
    }

    /// Enough chat to log more than a pipe holds (64 KiB), and one client that resets.
    fn busy_with_logging(addr: SocketAddr) {
        let (mut ada, _) = Raw::join(addr, "ada");
        let (mut bob, _) = Raw::join(addr, "bob");
        ada.expect("* bob joined");
        for round in 0..10 {
            let lines: String = (0..20)
                .map(|i| format!("{round}.{i} {}\n", "w".repeat(500)))
                .collect();
            bob.send_bytes(lines.as_bytes());
            ada.send("/who");
            // Ada's /who answer comes after Bob's lines were read... or not: read
            // until both the last of his lines and the answer are in.
            let last = format!("<bob> {round}.19 {}", "w".repeat(500));
            let (mut got_last, mut got_who) = (false, false);
            while !(got_last && got_who) {
                let line = ada.line();
                got_last |= line == last;
                got_who |= line.starts_with("* here: ");
            }
        }
        let mut doomed = connect(addr);
        doomed.write_all(b"half a na").unwrap();
        reset(doomed);
    }

    #[test]
    fn serves_and_stops_with_stdout_closed() {
        contract::survives_closed_stdout(SERVER, &[], busy_with_logging);
    }

    #[test]
    fn serves_and_stops_with_stdout_stalled() {
        contract::survives_stalled_stdout(SERVER, &[], busy_with_logging);
    }

    #[test]
    fn log_lines_use_the_shared_words() {
        let mut server = Server::start(SERVER, &[]);
        let (mut ada, _) = Raw::join(server.addr, "ada");
        wait_for_word(&mut server, log::CONNECTED);
        ada.send("/quit");
        ada.expect("* bye");
        let line = wait_for_word(&mut server, log::DISCONNECTED);
        assert!(line.ends_with("(ada): left"), "{line}");
        let exited = server.stop(SIGTERM);
        assert!(
            exited
                .stdout
                .lines()
                .last()
                .unwrap()
                .starts_with(log::SHUTTING_DOWN)
        );
    }

    #[test]
    fn the_front_door_runs_and_checks_lesson_13() {
        let ran = run_front_door(WORKBOOK, &["run", "13"], b"");
        assert!(ran.status.success(), "{}\n{}", ran.stdout, ran.stderr);
        assert!(
            ran.stdout.contains("client │ * welcome ada; here: ada"),
            "{}",
            ran.stdout
        );
        assert!(
            ran.stdout.contains("client │ * here: ada"),
            "{}",
            ran.stdout
        );
        assert!(
            ran.stdout.contains("server │ shutting down"),
            "{}",
            ran.stdout
        );
        let server = Server::start(SERVER, &["--quiet"]);
        let port = server.port().to_string();
        let checked = run_front_door(WORKBOOK, &["check", "13", "--port", &port], b"");
        assert!(checked.status.success(), "{}", checked.stdout);
        assert!(
            checked.stdout.contains("17 passed, 0 failed"),
            "{}",
            checked.stdout
        );
    }
}

mod exercises {
    //! The chapter's exercises: each test fails on the lesson as shipped and passes
    //! once the exercise is done. Run one with `cargo run -- exercise 13.1`.
    use super::*;

    #[test]
    #[ignore = "exercise 13.1: cargo run -- exercise 13.1"]
    fn exercise_1_a_time_command() {
        let server = Server::start(SERVER, &[]);
        let (mut ada, _) = Raw::join(server.addr, "ada");
        ada.send("/time");
        let line = ada.line();
        let time = line.strip_prefix("* ").unwrap_or_default();
        assert!(
            workbook::protocol::is_ctime(time),
            "/time should answer `* ` and a time like `Sun Nov 22 10:00:00 2026`, got {line:?}"
        );
        ada.send("/help");
        ada.send("/who");
        let mut help = Vec::new();
        loop {
            let line = ada.line();
            if line.starts_with("* here: ") {
                break;
            }
            help.push(line);
        }
        assert!(
            help.iter().any(|line| line.contains("/time")),
            "/help should list /time: {help:?}"
        );
    }

    #[test]
    #[ignore = "exercise 13.2: cargo run -- exercise 13.2"]
    fn exercise_2_no_name_in_time_and_the_server_closes() {
        let server = Server::start(SERVER, &["--name-timeout", "1"]);
        let (mut ada, _) = Raw::join(server.addr, "ada");
        let mut silent = Raw::connect(server.addr);
        assert_eq!(silent.lines_to_close(), ["* no name within 1 s; bye"]);
        // Ada, who gave her name in time, is still here.
        ada.send("/who");
        ada.expect("* here: ada");
    }

    #[test]
    #[ignore = "exercise 13.3: cargo run -- exercise 13.3"]
    fn exercise_3_a_newcomer_gets_the_last_ten_lines() {
        let server = Server::start(SERVER, &[]);
        let (mut ada, _) = Raw::join(server.addr, "ada");
        for i in 1..=12 {
            ada.send(&format!("line {i}"));
        }
        // Private, and a command: neither is part of what the room said.
        ada.send("/msg ada to myself");
        ada.expect("*ada* to myself");
        ada.send("/me waits");
        ada.expect("* ada waits");
        let (mut bob, _) = Raw::join(server.addr, "bob");
        // What came between the welcome and the answer to /who.
        bob.send("/who");
        let mut before_who = Vec::new();
        loop {
            let line = bob.line();
            if line.starts_with("* here: ") {
                break;
            }
            before_who.push(line);
        }
        let want: Vec<String> = (3..=12).map(|i| format!("<ada> line {i}")).collect();
        assert_eq!(before_who, want, "what the newcomer got after the welcome");
    }
}
