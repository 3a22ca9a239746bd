//! Lesson 16: the local (AF_UNIX) server and client, run as real programs and driven
//! by our client, by Python's socket module (a client not written here), and by raw
//! sockets for the cases a polite client does not make.

mod support;

use std::io::{Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use support::transcript::{self, Normaliser};
use support::*;
use workbook::log;
use workbook::protocol::Target;

const SERVER: &str = env!("CARGO_BIN_EXE_16_local_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_16_local_client");
const WORKBOOK: &str = env!("CARGO_BIN_EXE_workbook");

/// A directory of this test's own under the temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "wb16-{what}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    /// A path in it, as text for a command line.
    fn file(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_string()
    }

    /// The names in it, sorted.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An abstract name no other test (or run) uses.
fn unique_abstract_name(what: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "wb16-{what}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn connect_unix(path: &str) -> UnixStream {
    let stream =
        UnixStream::connect(path).unwrap_or_else(|err| panic!("cannot connect to {path}: {err}"));
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    stream
}

fn round_trip(stream: &mut UnixStream, message: &[u8]) {
    stream.write_all(message).unwrap();
    let mut echo = vec![0u8; message.len()];
    stream.read_exact(&mut echo).unwrap();
    assert_same_bytes(&echo, message, "the echo");
}

fn uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

mod protocol {
    //! The wire protocol on each transport, checked by the code `cargo run -- check 16`
    //! runs.
    use super::*;

    #[test]
    fn all_checks_pass_on_a_stream_path() {
        let dir = TempDir::new("proto");
        let path = dir.file("s.sock");
        let mut server = Server::start(SERVER, &["--path", &path, "--quiet"]);
        let mut target = Target::unix(Path::new(&path), false);
        support::protocol::all_checks_pass_at(16, &mut server, &mut target);
    }

    #[test]
    fn all_checks_pass_on_a_datagram_path() {
        let dir = TempDir::new("proto-dgram");
        let path = dir.file("d.sock");
        let mut server = Server::start(SERVER, &["--dgram", "--path", &path, "--quiet"]);
        let mut target = Target::unix(Path::new(&path), true);
        support::protocol::all_checks_pass_at(16, &mut server, &mut target);
    }

    #[test]
    fn all_checks_pass_over_udp() {
        let mut server = Server::start(SERVER, &["--udp", "--quiet"]);
        let mut target = Target::new(server.addr);
        support::protocol::all_checks_pass_at(16, &mut server, &mut target);
    }

    #[test]
    fn the_front_door_checks_each_transport_and_runs_the_pair() {
        let dir = TempDir::new("front");
        let path = dir.file("s.sock");
        let _server = Server::start(SERVER, &["--path", &path, "--quiet"]);
        let checked = run_front_door(WORKBOOK, &["check", "16", "--path", &path], b"");
        assert!(checked.status.success(), "{}", checked.stdout);
        assert!(
            checked.stdout.contains("7 passed, 0 failed")
                && checked.stdout.contains("PASS local-pass-fd"),
            "{}",
            checked.stdout
        );
        let dgram = dir.file("d.sock");
        let _dgram_server = Server::start(SERVER, &["--dgram", "--path", &dgram, "--quiet"]);
        let checked = run_front_door(WORKBOOK, &["check", "16", "--path", &dgram, "--dgram"], b"");
        assert!(
            checked.status.success() && checked.stdout.contains("4 passed, 0 failed"),
            "{}",
            checked.stdout
        );
        let udp = Server::start(SERVER, &["--udp", "--quiet"]);
        let port = udp.port().to_string();
        let checked = run_front_door(WORKBOOK, &["check", "16", "--port", &port], b"");
        assert!(
            checked.status.success() && checked.stdout.contains("3 passed, 0 failed"),
            "{}",
            checked.stdout
        );
        // A stream check against the datagram server, and the other way round:
        // refused at once, one line that says why.
        let wrong = run_front_door(WORKBOOK, &["check", "16", "--path", &dgram], b"");
        assert_error_line(&wrong, &[&dgram, "Protocol wrong type", "--dgram"]);
        let wrong = run_front_door(WORKBOOK, &["check", "16", "--path", &path, "--dgram"], b"");
        assert_error_line(&wrong, &[&path, "Protocol wrong type", "leave out --dgram"]);
        let nobody = dir.file("nobody.sock");
        let wrong = run(
            WORKBOOK,
            &["check", "16", "--path", &nobody, "--dgram"],
            b"",
        );
        assert_error_line(&wrong, &[&nobody, "16_local_server -- --dgram --path"]);

        let ran = run_front_door(WORKBOOK, &["run", "16"], b"");
        assert!(ran.status.success(), "{}\n{}", ran.stdout, ran.stderr);
        for needle in [
            "server │ listening on unix:/",
            "client │ hello",
            "client │ local",
            "server │ connected pid ",
            "server │ shutting down: served 1 client, socket file removed",
        ] {
            assert!(
                ran.stdout.contains(needle),
                "{needle:?} in:\n{}",
                ran.stdout
            );
        }
    }
}

mod lesson {
    use super::*;

    /// `check 16` with no place checks the lesson's default path (under $TMPDIR), as
    /// the server with no --path listens there; `--dgram` alone too.
    #[test]
    fn check_without_a_path_checks_the_default_path() {
        let dir = TempDir::new("default-check");
        let tmpdir = format!("TMPDIR={}", dir.0.display());
        let server = Server::start("env", &[&tmpdir, SERVER, "--quiet"]);
        let default = dir
            .0
            .join(format!("socket-workbook-{}/16_local.sock", uid()));
        assert_eq!(server.local.as_deref(), default.to_str());
        let checked = run("env", &[&tmpdir, WORKBOOK, "check", "16"], b"");
        assert!(
            checked.status.success() && checked.stdout.contains("7 passed, 0 failed"),
            "{}{}",
            checked.stdout,
            checked.stderr
        );
        assert_clean_shutdown(&server.stop(SIGINT));
        let server = Server::start("env", &[&tmpdir, SERVER, "--dgram", "--quiet"]);
        let checked = run("env", &[&tmpdir, WORKBOOK, "check", "16", "--dgram"], b"");
        assert!(
            checked.status.success() && checked.stdout.contains("4 passed, 0 failed"),
            "{}{}",
            checked.stdout,
            checked.stderr
        );
        assert_clean_shutdown(&server.stop(SIGINT));
        // Nobody there: one error line naming the default path.
        let nobody = run("env", &[&tmpdir, WORKBOOK, "check", "16"], b"");
        assert_error_line(&nobody, &[default.to_str().unwrap(), "16_local_server"]);
    }

    /// `run 16` while the learner's own server holds the default path: it runs its
    /// pair on a private path of its own, and removes it.
    #[test]
    fn run_uses_a_private_path_beside_a_running_server() {
        let dir = TempDir::new("default-run");
        let tmpdir = format!("TMPDIR={}", dir.0.display());
        let server = Server::start("env", &[&tmpdir, SERVER, "--quiet"]);
        let ran = run("env", &[&tmpdir, WORKBOOK, "run", "16"], b"");
        assert!(ran.status.success(), "{}\n{}", ran.stdout, ran.stderr);
        assert!(ran.stdout.contains("client │ hello"), "{}", ran.stdout);
        assert!(
            !ran.stdout.contains(server.local.as_deref().unwrap()),
            "run 16 used the default path:\n{}",
            ran.stdout
        );
        assert_clean_shutdown(&server.stop(SIGINT));
        // Only the default directory is left in $TMPDIR, and it is empty.
        assert_eq!(dir.names(), vec![format!("socket-workbook-{}", uid())]);
        let default_dir = dir.0.join(format!("socket-workbook-{}", uid()));
        assert_eq!(std::fs::read_dir(default_dir).unwrap().count(), 0);
    }

    // A client not written here: Python's socket module.

    #[test]
    fn python_af_unix_client_gets_its_echo_and_passes_a_descriptor() {
        if !tool_available("python3", &["--version"]) {
            return;
        }
        let dir = TempDir::new("python");
        let path = dir.file("s.sock");
        let passed = dir.file("passed.txt");
        std::fs::write(&passed, "read by the server\n").unwrap();
        let mut server = Server::start(SERVER, &["--path", &path]);
        // socket.send_fds is SCM_RIGHTS (Python 3.9 and later).
        let script = r#"
import os, socket, sys
path, passed = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(path)
print("pid", os.getpid())
s.sendall(b"hello from python\n")
print(s.recv(100).decode(), end="")
with open(passed) as f:
    socket.send_fds(s, [b"fd"], [f.fileno()])
reply = b""
while not reply.endswith(b"\n"):
    reply += s.recv(200)
print(reply.decode(), end="")
"#;
        let ran = run("python3", &["-c", script, &path, &passed], b"");
        assert!(ran.status.success(), "{}", ran.stderr);
        let mut lines = ran.stdout.lines();
        let pid_line = lines.next().unwrap();
        assert!(pid_line.starts_with("pid "), "{}", ran.stdout);
        assert_eq!(lines.next(), Some("hello from python"), "{}", ran.stdout);
        assert_eq!(
            lines.next(),
            Some(r#"fd: read 19 bytes of 19: "read by the server\n""#),
            "{}",
            ran.stdout
        );
        // SO_PEERCRED names the Python process, as it connected.
        let connected = server.wait_for_line(log::CONNECTED);
        assert!(
            connected.starts_with(&format!("{} {pid_line} uid {} ", log::CONNECTED, uid())),
            "{connected}"
        );
        assert_clean_shutdown(&server.stop(SIGINT));
    }

    #[test]
    fn peer_credentials_name_the_connecting_process() {
        let dir = TempDir::new("cred");
        let path = dir.file("s.sock");
        let mut server = Server::start(SERVER, &["--path", &path]);
        let mut stream = connect_unix(&path);
        round_trip(&mut stream, b"who am I?\n");
        let connected = server.wait_for_line(log::CONNECTED);
        let gid = nix::unistd::getgid().as_raw();
        let want = format!(
            "{} pid {} uid {} gid {gid} -> unix:{path}",
            log::CONNECTED,
            std::process::id(),
            uid()
        );
        assert!(connected.starts_with(&want), "{connected}\nwant {want}");
    }

    // The socket file: stale, live, permissions, removal.

    #[test]
    fn a_stale_socket_file_is_removed_and_a_live_one_refused() {
        let dir = TempDir::new("stale");
        let path = dir.file("s.sock");
        // A socket file nobody listens on: bound, then closed (close does not unlink).
        drop(UnixListener::bind(&path).unwrap());
        assert!(Path::new(&path).exists());
        let mut server = Server::start(SERVER, &["--path", &path]);
        server.wait_for_line("removed stale socket file");
        round_trip(&mut connect_unix(&path), b"served after the stale file\n");

        // A second server on the same path: refused by the first one's lock, and the
        // first still serves (and was not probed: no client in its log).
        let second = run(SERVER, &["--path", &path], b"");
        assert_error_line(&second, &[&path, "is in use", "holds its lock file"]);
        round_trip(&mut connect_unix(&path), b"still mine\n");
        let dgram = run(SERVER, &["--dgram", "--path", &path], b"");
        assert_error_line(&dgram, &[&path, "is in use", "holds its lock file"]);
        let exited = server.stop(SIGINT);
        assert_clean_shutdown(&exited);
        assert!(
            exited.stdout.contains("served 2 clients"),
            "{}",
            exited.stdout
        );

        // Another program's live server (no lock file): the probe's connect succeeds.
        let foreign = dir.file("foreign.sock");
        let listener = UnixListener::bind(&foreign).unwrap();
        let refused = run(SERVER, &["--path", &foreign], b"");
        assert_error_line(&refused, &[&foreign, "a server is listening"]);
        drop(listener);
        std::fs::remove_file(&foreign).unwrap();
        // A live datagram socket: the stream probe gets EPROTOTYPE, not ECONNREFUSED.
        let socket = UnixDatagram::bind(&foreign).unwrap();
        for args in [&["--path", &foreign][..], &["--dgram", "--path", &foreign]] {
            let refused = run(SERVER, args, b"");
            assert_error_line(&refused, &[&foreign, "a datagram server is bound to it"]);
        }
        drop(socket);
        std::fs::remove_file(&foreign).unwrap();

        // A live server that does not accept, its backlog full: the probe must not wait.
        let busy_path = dir.file("busy.sock");
        let _busy = UnixListener::bind(&busy_path).unwrap();
        let mut queued = Vec::new();
        for _ in 0..10_000 {
            let socket =
                socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
            socket.set_nonblocking(true).unwrap();
            match socket.connect(&socket2::SockAddr::unix(&busy_path).unwrap()) {
                Ok(()) => queued.push(socket),
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(err) => panic!("connect: {err}"),
            }
        }
        let refused = run(SERVER, &["--path", &busy_path], b"");
        assert_error_line(&refused, &[&busy_path, "its backlog is full"]);
        drop(queued);

        // Not a socket at all: never removed.
        std::fs::write(&path, "my notes").unwrap();
        let refused = run(SERVER, &["--path", &path], b"");
        assert_error_line(&refused, &[&path, "is not a socket"]);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "my notes");
    }

    /// Two servers starting at once on a stale file: the probe and the unlink are two
    /// steps, and a server that bound in between would lose its file. A lock on
    /// PATH.lock, held from before the probe to the end of the server, makes it one.
    #[test]
    fn the_lock_file_is_held_around_the_probe_and_for_the_servers_life() {
        use nix::fcntl::{Flock, FlockArg};
        let dir = TempDir::new("lock");
        let path = dir.file("s.sock");
        let lock = format!("{path}.lock");
        drop(UnixListener::bind(&path).unwrap());
        // Another server is in the middle of its start: it holds the lock.
        let held = Flock::lock(
            std::fs::File::create(&lock).unwrap(),
            FlockArg::LockExclusiveNonblock,
        )
        .unwrap();
        let refused = run(SERVER, &["--path", &path], b"");
        assert_error_line(&refused, &[&path, "is in use", &lock]);
        assert!(
            Path::new(&path).exists(),
            "the file was removed under the lock"
        );
        drop(held);

        // Free, it is taken, held while the server runs, and removed when it stops.
        let mut server = Server::start(SERVER, &["--path", &path]);
        server.wait_for_line("removed stale socket file");
        let file = std::fs::File::open(&lock).unwrap();
        assert!(
            Flock::lock(file, FlockArg::LockExclusiveNonblock).is_err(),
            "the running server does not hold {lock}"
        );
        let second = run(SERVER, &["--dgram", "--path", &path], b"");
        assert_error_line(&second, &[&path, "is in use", &lock]);
        assert_clean_shutdown(&server.stop(SIGINT));
        assert_eq!(dir.names(), Vec::<String>::new(), "left behind");
    }

    #[test]
    fn the_socket_file_is_0600_whatever_the_umask_and_mode_sets_it() {
        let dir = TempDir::new("mode");
        for (args, want) in [(&[][..], 0o600), (&["--mode", "660"][..], 0o660)] {
            let path = dir.file("s.sock");
            // umask 000 would make bind(2) create the file 0777 without the lesson's care.
            let mut command = vec!["-c", "umask 000 && exec \"$0\" \"$@\"", SERVER];
            command.extend(["--path", &path]);
            command.extend(args);
            let server = Server::start("sh", &command);
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, want, "mode {mode:o} for {args:?}, want {want:o}");
            assert_clean_shutdown(&server.stop(SIGINT));
        }
    }

    #[test]
    fn another_user_cannot_connect_to_a_0600_socket() {
        // Only root can become another user for the test; and root itself is not
        // stopped by file permissions, so the connect must come from that other user.
        if !nix::unistd::getuid().is_root() {
            eprintln!("skipped: needs root to connect as another user (nobody)");
            return;
        }
        if !tool_available("python3", &["--version"]) {
            return;
        }
        let dir = TempDir::new("others");
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.file("s.sock");
        let mut server = Server::start(SERVER, &["--path", &path]);
        let script = r#"
import os, socket, sys
os.setgid(65534); os.setuid(65534)
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1]); print("connected")
except PermissionError as err:
    print("refused:", err.strerror)
"#;
        let ran = run("python3", &["-c", script, &path], b"");
        assert_eq!(
            ran.stdout.trim(),
            "refused: Permission denied",
            "{}",
            ran.stderr
        );
        // With --mode 666 the same user gets in.
        let open = dir.file("open.sock");
        let mut open_server = Server::start(SERVER, &["--path", &open, "--mode", "666"]);
        let ran = run("python3", &["-c", script, &open], b"");
        assert_eq!(ran.stdout.trim(), "connected", "{}", ran.stderr);
        let connected = open_server.wait_for_line(log::CONNECTED);
        assert!(connected.contains(" uid 65534 gid 65534 "), "{connected}");
        server.drain();
        assert!(
            !server
                .seen
                .iter()
                .any(|line| line.starts_with(log::CONNECTED)),
            "{}",
            server.last_lines()
        );
    }

    #[test]
    fn the_file_is_removed_on_sigint_and_sigterm_even_with_clients_connected() {
        let dir = TempDir::new("remove");
        for (mode, signal) in [(None, SIGINT), (Some("--dgram"), SIGTERM)] {
            let path = dir.file("s.sock");
            let mut args = vec!["--path", path.as_str()];
            args.extend(mode);
            let server = Server::start(SERVER, &args);
            let _idle = mode.is_none().then(|| connect_unix(&path));
            // And one that sends without reading: its thread blocks in write until
            // the grace period ends and the server cuts it off.
            let greedy = mode.is_none().then(|| {
                let mut stream = connect_unix(&path);
                std::thread::spawn(move || {
                    let chunk = vec![b'g'; 64 * 1024];
                    for _ in 0..1024 {
                        if stream.write_all(&chunk).is_err() {
                            break;
                        }
                    }
                })
            });
            assert!(Path::new(&path).exists());
            let exited = server.stop(signal);
            assert_clean_shutdown(&exited);
            assert!(
                exited.stdout.contains("socket file removed"),
                "{}",
                exited.stdout
            );
            assert!(
                !Path::new(&path).exists(),
                "{path} left behind after {signal:?}"
            );
            if let Some(greedy) = greedy {
                greedy.join().unwrap();
            }
        }
    }

    #[test]
    fn a_file_that_replaced_ours_is_not_removed() {
        let dir = TempDir::new("replaced");
        let path = dir.file("s.sock");
        let server = Server::start(SERVER, &["--path", &path]);
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "someone else's").unwrap();
        let exited = server.stop(SIGINT);
        assert_clean_shutdown(&exited);
        assert!(exited.stdout.contains("replaced"), "{}", exited.stdout);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "someone else's");
    }

    #[test]
    fn abstract_name_serves_without_a_file() {
        let name = unique_abstract_name("abs");
        let mut server = Server::start(SERVER, &["--abstract", &name]);
        assert_eq!(server.local.as_deref(), Some(format!("@{name}").as_str()));
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let mut stream = UnixStream::connect_addr(&addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        round_trip(&mut stream, b"no file\n");
        let ran = run(CLIENT, &["--abstract", &name, "via our client"], b"");
        assert!(ran.status.success(), "{}", ran.stderr);
        assert_eq!(ran.stdout, "via our client\n");
        server.wait_for_line(&format!("-> unix:@{name}"));
        drop(stream);
        let exited = server.stop(SIGINT);
        assert_clean_shutdown(&exited);
        assert!(exited.stdout.contains("no file (abstract name)"));
        // The name is free again once the last socket bound to it is closed.
        drop(UnixListener::bind_addr(&addr).expect("the abstract name is free"));
        assert_usage_error(&run(SERVER, &["--abstract", &name, "--mode", "600"], b""));
    }

    // Datagrams.

    #[test]
    fn datagram_client_binds_a_reply_path_and_removes_it() {
        let dir = TempDir::new("dgram");
        let path = dir.file("d.sock");
        let mut server = Server::start(SERVER, &["--dgram", "--path", &path]);
        let ran = run(CLIENT, &["--dgram", "--path", &path, "hello", "world"], b"");
        assert!(ran.status.success(), "{}", ran.stderr);
        assert_eq!(ran.stdout, "echo:hello\necho:world\n");
        let received = server.wait_for_line(log::RECEIVED);
        assert!(received.contains("16_local_client-"), "{received}");
        assert_eq!(
            dir.names(),
            vec!["d.sock".to_string(), "d.sock.lock".to_string()],
            "reply path left behind"
        );
        // An unbound sender cannot be answered; the server says so and goes on.
        let unbound = UnixDatagram::unbound().unwrap();
        unbound.send_to(b"anyone?", &path).unwrap();
        server.wait_for_line("no address to answer to");
        let ran = run(CLIENT, &["--dgram", "--path", &path, "again"], b"");
        assert_eq!(ran.stdout, "echo:again\n", "{}", ran.stderr);
    }

    /// The reply socket is connect()ed to the server: a datagram from anyone else
    /// (here a forger who learnt the reply path from the server's log) is not taken
    /// for the reply; the kernel refuses it.
    #[test]
    fn datagram_client_takes_replies_only_from_its_server() {
        let dir = TempDir::new("forged");
        let path = dir.file("d.sock");
        let fake = UnixDatagram::bind(&path).unwrap();
        fake.set_read_timeout(Some(WAIT)).unwrap();
        let answering = std::thread::spawn(move || {
            let mut buffer = [0u8; 100];
            let (n, from) = fake.recv_from(&mut buffer).unwrap();
            assert_eq!(&buffer[..n], b"hi");
            let reply_path = from.as_pathname().unwrap().to_path_buf();
            let mode = std::fs::metadata(&reply_path).unwrap().permissions().mode();
            let forger = UnixDatagram::unbound().unwrap();
            let forged = forger.send_to(b"echo:forged", &reply_path);
            fake.send_to(b"echo:hi", &reply_path).unwrap();
            (forged.is_ok(), mode & 0o777)
        });
        // umask 000: the reply path is still this user's alone.
        let ran = run(
            "sh",
            &[
                "-c",
                "umask 000 && exec \"$0\" \"$@\"",
                CLIENT,
                "--dgram",
                "--path",
                &path,
                "hi",
            ],
            b"",
        );
        let (forged, mode) = answering.join().unwrap();
        assert_eq!(ran.stdout, "echo:hi\n", "{}", ran.stderr);
        assert!(
            !forged,
            "a forged datagram reached the client's reply socket"
        );
        assert_eq!(mode, 0o600, "reply path mode {mode:o}");
    }

    /// The reply path is removed however the client ends: stdout closed, Ctrl-C.
    #[test]
    fn datagram_client_removes_its_reply_path_on_every_exit() {
        let dir = TempDir::new("dgram-exit");
        let path = dir.file("d.sock");
        let _server = Server::start(SERVER, &["--dgram", "--path", &path, "--quiet"]);
        let exited = run_with_closed_stdout(CLIENT, &["--dgram", "--path", &path, "a", "b"], b"");
        assert_quiet_stop(&exited, "--dgram with stdout closed");
        assert_eq!(
            dir.names(),
            vec!["d.sock", "d.sock.lock"],
            "after stdout closed"
        );

        let mut client = Interactive::start(CLIENT, &["--dgram", "--path", &path]);
        client.send_line("first");
        assert_eq!(client.expect_line(), "echo:first");
        assert_eq!(dir.names().len(), 3, "the reply path exists while it runs");
        let pid = client.pid();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), SIGINT).unwrap();
        // Ended by the signal, with its input still open (not by end of input).
        assert!(
            echo::eventually(|| process_state(pid) == Some('Z')),
            "the client still runs after Ctrl-C"
        );
        let exited = client.finish();
        assert_eq!(exited.status.code(), Some(130), "{exited:?}");
        assert_eq!(dir.names(), vec!["d.sock", "d.sock.lock"], "after Ctrl-C");
    }

    #[test]
    fn client_hints_name_the_place_and_the_cause() {
        let dir = TempDir::new("hints");
        // A stream client at a datagram server: add --dgram.
        let path = dir.file("d.sock");
        let _server = Server::start(SERVER, &["--dgram", "--path", &path, "--quiet"]);
        let wrong = run(CLIENT, &["--path", &path, "hi"], b"");
        assert_error_line(&wrong, &[&path, "a datagram server", "--dgram"]);
        // A server path that is fine, a reply path beside it that is too long.
        let long_dir = dir.0.join("d".repeat(107 - dir.0.as_os_str().len() - 10));
        std::fs::create_dir(&long_dir).unwrap();
        let long = long_dir.join("d.sock");
        let long = long.to_str().unwrap();
        let _long_server = Server::start(SERVER, &["--dgram", "--path", long, "--quiet"]);
        let exited = run(CLIENT, &["--dgram", "--path", long, "hi"], b"");
        assert_error_line(&exited, &["reply path", "108 bytes"]);
        assert!(
            !exited.stderr.contains("is the server running"),
            "{}",
            exited.stderr
        );
        // A directory that does not exist: said so, not "the default directory".
        let exited = run(
            CLIENT,
            &["--dgram", "--path", "/nonexistent/x.sock", "hi"],
            b"",
        );
        assert_error_line(&exited, &["/nonexistent", "does not exist"]);
        assert!(
            !exited.stderr.contains("default directory"),
            "{}",
            exited.stderr
        );
        // An abstract name nobody serves: the hint starts a server on that name.
        let name = unique_abstract_name("hint");
        let exited = run(CLIENT, &["--dgram", "--abstract", &name, "hi"], b"");
        assert_error_line(&exited, &[&format!("-- --dgram --abstract {name}")]);
        let exited = run(CLIENT, &["--abstract", &name, "hi"], b"");
        assert_error_line(&exited, &[&format!("-- --abstract {name}")]);
    }

    /// A flood of datagrams that cannot be answered: the error lines are rate-limited
    /// (one a second), as accept errors are, not one per datagram.
    #[test]
    fn datagram_errors_are_rate_limited() {
        let dir = TempDir::new("dgram-flood");
        let path = dir.file("d.sock");
        let server = Server::start(SERVER, &["--dgram", "--path", &path, "--quiet"]);
        let unbound = UnixDatagram::unbound().unwrap();
        unbound.set_write_timeout(Some(WAIT)).unwrap();
        for _ in 0..3000 {
            unbound.send_to(b"nobody to answer", &path).unwrap();
        }
        // Served in order: once this is answered, the flood has been read.
        let ran = run(
            CLIENT,
            &["--dgram", "--path", &path, "after the flood"],
            b"",
        );
        assert_eq!(ran.stdout, "echo:after the flood\n", "{}", ran.stderr);
        // An AF_UNIX datagram longer than the server reads: cut, and said so.
        let client = UnixDatagram::bind(dir.file("c.sock")).unwrap();
        client.set_read_timeout(Some(WAIT)).unwrap();
        client.send_to(&vec![b'L'; 100_000], &path).unwrap();
        let mut reply = vec![0u8; 200_000];
        assert_eq!(client.recv(&mut reply).unwrap(), 5 + 65_507);
        let exited = server.stop(SIGINT);
        assert!(
            exited.stdout.contains("a datagram longer than 65507 bytes"),
            "{}",
            exited.stdout
        );
        assert_clean_shutdown(&exited);
        let lines = exited.stdout.matches("no address to answer to").count();
        assert!(
            (1..10).contains(&lines),
            "{lines} error lines for 3000 datagrams:\n{}",
            exited
                .stdout
                .lines()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    #[test]
    fn udp_echo_for_our_client_and_the_seeds_python_client() {
        let mut server = Server::start(SERVER, &["--udp"]);
        let port = server.port().to_string();
        let ran = run(CLIENT, &["--udp", "--port", &port, "Hello", "World"], b"");
        assert!(ran.status.success(), "{}", ran.stderr);
        assert_eq!(ran.stdout, "echo:Hello\necho:World\n");
        server.wait_for_line(log::RECEIVED);
        if !tool_available("python3", &["--version"]) {
            return;
        }
        let script = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(10)
s.sendto(b"Hello", ("127.0.0.1", int(sys.argv[1])))
resp, addr = s.recvfrom(256)
print(resp)
"#;
        let ran = run("python3", &["-c", script, &port], b"");
        assert_eq!(ran.stdout, "b'echo:Hello'\n", "{}", ran.stderr);
    }

    /// A reply that comes late, or twice, belongs to an earlier message: the client
    /// must not print it as the answer to the next one.
    #[test]
    fn udp_client_prints_only_the_reply_to_the_message_it_sent() {
        let fake = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        fake.set_read_timeout(Some(WAIT)).unwrap();
        let port = fake.local_addr().unwrap().port().to_string();
        let answering = std::thread::spawn(move || {
            let mut buffer = [0u8; 100];
            // `one` is answered twice (a duplicate, or a late answer to a retry).
            let (n, from) = fake.recv_from(&mut buffer).unwrap();
            assert_eq!(&buffer[..n], b"one");
            fake.send_to(b"echo:one", from).unwrap();
            fake.send_to(b"echo:one", from).unwrap();
            let (n, from) = fake.recv_from(&mut buffer).unwrap();
            assert_eq!(&buffer[..n], b"two");
            fake.send_to(b"echo:two", from).unwrap();
        });
        let ran = run(CLIENT, &["--udp", "--port", &port, "one", "two"], b"");
        answering.join().unwrap();
        assert!(ran.status.success(), "{}", ran.stderr);
        assert_eq!(ran.stdout, "echo:one\necho:two\n");

        // Nobody on the port: the first try is refused (ICMP port unreachable), and
        // the error says so, with the port to start a server on.
        let free = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = free.local_addr().unwrap().port().to_string();
        drop(free);
        let refused = run(CLIENT, &["--udp", "--port", &port, "hi"], b"");
        assert_error_line(
            &refused,
            &[
                "Connection refused",
                "after 1 try",
                &format!("-- --udp --port {port}"),
            ],
        );
    }

    // socketpair and fork.

    #[test]
    fn socketpair_child_echoes_and_is_reaped() {
        let ran = run(CLIENT, &["--socketpair", "one", "two"], b"");
        assert!(ran.status.success(), "{}", ran.stderr);
        let lines: Vec<&str> = ran.stdout.lines().collect();
        assert_eq!(lines.len(), 4, "{}", ran.stdout);
        let child: u32 = lines[0]
            .strip_prefix("forked child ")
            .and_then(|rest| rest.split(';').next())
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("no child pid in {:?}", lines[0]));
        assert_eq!(lines[1], "child echoed: one");
        assert_eq!(lines[2], "child echoed: two");
        // waitpid(2) returned the child's exit status: that is the reaping.
        assert_eq!(
            lines[3],
            format!("child {child} exited with status 0; reaped")
        );
        assert_ne!(process_state(child), Some('Z'), "child {child} is a zombie");
    }

    /// `--socketpair | head -1`: the parent cannot print, and exits; it must reap its
    /// child first. A subreaper (the Python script) inherits any child the client
    /// left behind, and finds none.
    #[test]
    fn socketpair_reaps_its_child_even_when_stdout_is_closed() {
        if !tool_available("python3", &["--version"]) {
            return;
        }
        let script = r#"
import ctypes, os, subprocess, sys
PR_SET_CHILD_SUBREAPER = 36
if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
    sys.exit("prctl failed")
r, w = os.pipe()
os.close(r)  # stdout closed: every write fails with EPIPE
client = subprocess.Popen([sys.argv[1], "--socketpair", "hello"], stdout=w)
os.close(w)
print("client exited", client.wait(timeout=20))
try:
    pid, status = os.waitpid(-1, 0)  # an orphan of the client, once it has exited
    print("orphan", pid, "left unreaped by the client")
except ChildProcessError:
    print("no orphan")
"#;
        let ran = run("python3", &["-c", script, CLIENT], b"");
        assert_eq!(ran.stdout, "client exited 0\nno orphan\n", "{}", ran.stderr);
    }

    #[test]
    fn socketpair_reads_messages_from_stdin_too() {
        let ran = run(CLIENT, &["--socketpair"], b"from stdin\n\n");
        assert!(ran.status.success(), "{}", ran.stderr);
        assert!(
            ran.stdout.contains("child echoed: from stdin\n"),
            "{}",
            ran.stdout
        );
        assert!(
            ran.stdout.ends_with("exited with status 0; reaped\n"),
            "{}",
            ran.stdout
        );
    }

    /// A line longer than both sockets' buffers together: a client that wrote all of it
    /// before reading would wait for ever (the server stops reading while its echo is
    /// not read). Read while writing, it comes back whole.
    #[test]
    fn a_line_of_several_megabytes_comes_back_whole_on_a_stream_and_a_socketpair() {
        let dir = TempDir::new("long-line");
        let path = dir.file("s.sock");
        let _server = Server::start(SERVER, &["--path", &path, "--quiet"]);
        let line: Vec<u8> = (0..3_000_000).map(|i| b'a' + (i % 26) as u8).collect();
        let mut input = line.clone();
        input.extend_from_slice(b"\nand a short one\n");
        let ran = run(CLIENT, &["--path", &path], &input);
        assert!(ran.status.success(), "{}", ran.stderr);
        let mut want = String::from_utf8(line.clone()).unwrap();
        want.push_str("\nand a short one\n");
        assert!(
            ran.stdout == want,
            "stream: {} bytes back, want {}",
            ran.stdout.len(),
            want.len()
        );

        let ran = run(CLIENT, &["--socketpair"], &input);
        assert!(ran.status.success(), "{}", ran.stderr);
        let lines: Vec<&str> = ran.stdout.lines().collect();
        assert_eq!(
            lines.len(),
            4,
            "socketpair: {} bytes of output",
            ran.stdout.len()
        );
        assert!(
            lines[1].strip_prefix("child echoed: ").map(str::as_bytes) == Some(&line[..]),
            "socketpair: the long echo differs ({} bytes)",
            lines[1].len()
        );
        assert_eq!(lines[2], "child echoed: and a short one");
        assert!(
            lines[3].ends_with("exited with status 0; reaped"),
            "{}",
            lines[3]
        );
    }

    // Passing descriptors.

    #[test]
    fn pass_fd_the_server_reads_a_bounded_part_of_regular_files_only() {
        let dir = TempDir::new("passfd");
        let path = dir.file("s.sock");
        let mut server = Server::start(SERVER, &["--path", &path]);
        let small = dir.file("small.txt");
        std::fs::write(&small, "line one\nline two\n").unwrap();
        let ran = run(CLIENT, &["--path", &path, "--pass-fd", &small], b"");
        assert!(ran.status.success(), "{}", ran.stderr);
        assert!(
            ran.stdout
                .ends_with("fd: read 18 bytes of 18: \"line one\\nline two\\n\"\n"),
            "{}",
            ran.stdout
        );
        server.wait_for_line("passed a descriptor: fd: read 18 bytes of 18");
        // A large file: only the first 4096 bytes are read.
        let large = dir.file("large.bin");
        std::fs::write(&large, vec![b'x'; 100_000]).unwrap();
        let ran = run(CLIENT, &["--path", &path, "--pass-fd", &large], b"");
        assert!(
            ran.stdout.contains("fd: read 4096 bytes of 100000: "),
            "{}",
            ran.stdout
        );
        // A directory (no regular file): not read.
        let ran = run(
            CLIENT,
            &["--path", &path, "--pass-fd", dir.0.to_str().unwrap()],
            b"",
        );
        assert!(
            ran.stdout.ends_with("fd: not a regular file, not read\n"),
            "{}",
            ran.stdout
        );
        // A FIFO nobody writes to: opened without waiting for a writer, not read.
        let fifo = dir.file("fifo");
        nix::unistd::mkfifo(fifo.as_str(), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let ran = run(CLIENT, &["--path", &path, "--pass-fd", &fifo], b"");
        assert!(
            ran.stdout.ends_with("fd: not a regular file, not read\n"),
            "{}{}",
            ran.stdout,
            ran.stderr
        );
        // The server goes on echoing.
        round_trip(&mut connect_unix(&path), b"after four files\n");
        let missing = run(
            CLIENT,
            &["--path", &path, "--pass-fd", "/no/such/file"],
            b"",
        );
        assert_error_line(&missing, &["cannot open /no/such/file"]);
    }

    #[test]
    fn more_descriptors_than_room_are_all_closed_and_the_truncation_logged() {
        use std::os::fd::AsRawFd;
        let dir = TempDir::new("many-fds");
        let path = dir.file("s.sock");
        let mut server = Server::start(SERVER, &["--path", &path]);
        let file = dir.file("passed.txt");
        std::fs::write(&file, "passed\n").unwrap();
        let mut stream = connect_unix(&path);
        round_trip(&mut stream, b"first an echo\n");
        let before = server.open_fds();
        // 5 to 8 descriptors in one message, ten times: the server has room for 4.
        for round in 0..10 {
            let files: Vec<std::fs::File> = (0..5 + round % 4)
                .map(|_| std::fs::File::open(&file).unwrap())
                .collect();
            let fds: Vec<i32> = files.iter().map(|f| f.as_raw_fd()).collect();
            nix::sys::socket::sendmsg::<()>(
                stream.as_raw_fd(),
                &[std::io::IoSlice::new(b"fd")],
                &[nix::sys::socket::ControlMessage::ScmRights(&fds)],
                nix::sys::socket::MsgFlags::empty(),
                None,
            )
            .unwrap();
            let mut reply = Vec::new();
            let mut byte = [0u8; 1];
            while reply.last() != Some(&b'\n') {
                match stream.read(&mut byte) {
                    Ok(1) => reply.push(byte[0]),
                    other => panic!(
                        "round {round}: no reply line ({other:?}) after {:?}; {}",
                        String::from_utf8_lossy(&reply),
                        server.last_lines()
                    ),
                }
            }
            assert_eq!(reply, b"fd: read 7 bytes of 7: \"passed\\n\"\n");
        }
        server.wait_for_line("more descriptors than room");
        // Every descriptor received was closed, the first after it was read, the
        // others at once: the server holds as many as before.
        assert_eq!(server.open_fds(), before, "descriptors leaked");
        round_trip(&mut stream, b"still echoing\n");
        drop(stream);
        let exited = server.stop(SIGINT);
        assert_clean_shutdown(&exited);
        // Rate-limited: a line a second at most, not one per message.
        let said = exited.stdout.matches("more descriptors than room").count();
        assert!(said < 10, "{said} lines for 10 messages");
    }

    // The contract.

    #[test]
    fn contract_server() {
        contract::rejects_bad_flags(SERVER);
        let dir = TempDir::new("contract");
        let path = dir.file("s.sock");
        for bad in [
            &["--path", &path, "--abstract", "x"][..],
            &["--mode", "999", "--path", &path],
            &["--mode", "rw", "--path", &path],
            &["--udp", "--dgram"],
            &["--udp", "--path", &path],
            &["--max-threads", "0", "--path", &path],
        ] {
            assert_usage_error(&run(SERVER, bad, b""));
        }
        let nowhere = dir.file("no/such/dir/s.sock");
        let exited = run(SERVER, &["--path", &nowhere], b"");
        assert_error_line(&exited, &[&nowhere, "directory does not exist"]);
        let long = format!("{}/{}", dir.0.display(), "x".repeat(120));
        let exited = run(SERVER, &["--path", &long], b"");
        assert_error_line(&exited, &["108 bytes"]);
        udp::server_reports_port_in_use(SERVER, &["--udp"]);
        // A host not of this machine, for --udp (the AF_UNIX modes take no host).
        let exited = run(
            SERVER,
            &["--udp", "--host", "192.0.2.1", "--port", "0"],
            b"",
        );
        assert_error_line(&exited, &["192.0.2.1", "not one of this machine's"]);
        contract::server_stops_on(SERVER, &["--path", &path], SIGINT);
        contract::server_stops_on(SERVER, &["--path", &path, "--dgram"], SIGTERM);
        contract::server_stops_on(SERVER, &["--udp"], SIGTERM);
    }

    #[test]
    fn contract_client() {
        contract::rejects_bad_flags(CLIENT);
        let dir = TempDir::new("client");
        let path = dir.file("nobody.sock");
        let exited = run(CLIENT, &["--path", &path, "hello"], b"");
        assert_error_line(&exited, &[&path, "cargo run --bin 16_local_server"]);
        let exited = run(CLIENT, &["--dgram", "--path", &path, "hello"], b"");
        assert_error_line(
            &exited,
            &[&path, "cargo run --bin 16_local_server -- --dgram"],
        );
        assert_eq!(dir.names(), Vec::<String>::new(), "reply path left behind");
        for bad in [
            &["--udp", "--dgram"][..],
            &["--socketpair", "--pass-fd", "x"],
        ] {
            assert_usage_error(&run(CLIENT, bad, b""));
        }
    }

    #[test]
    fn client_with_stdout_closed_stops_quietly() {
        let dir = TempDir::new("client-closed");
        let path = dir.file("s.sock");
        let _server = Server::start(SERVER, &["--path", &path, "--quiet"]);
        let file = dir.file("f.txt");
        std::fs::write(&file, "x").unwrap();
        for args in [
            &["--path", &path, "hello"][..],
            &["--path", &path, "--pass-fd", &file],
            &["--socketpair", "hello"],
        ] {
            let exited = run_with_closed_stdout(CLIENT, args, b"");
            assert_quiet_stop(&exited, &format!("{args:?}"));
        }
    }

    /// Enough traffic to log more than a pipe holds (64 KiB): 800 round trips of
    /// 60 bytes, each a `received` line of about 150 bytes.
    fn busy_with_logging(path: &str) {
        let mut stream = connect_unix(path);
        for _ in 0..800 {
            round_trip(&mut stream, &[b'z'; 60]);
        }
    }

    #[test]
    fn serves_and_stops_with_stdout_closed() {
        let dir = TempDir::new("closed");
        let path = dir.file("s.sock");
        contract::survives_closed_stdout(SERVER, &["--path", &path], |_| busy_with_logging(&path));
        assert!(!Path::new(&path).exists());
    }

    #[test]
    fn serves_and_stops_with_stdout_stalled() {
        let dir = TempDir::new("stalled");
        let path = dir.file("s.sock");
        contract::survives_stalled_stdout(SERVER, &["--path", &path], |_| busy_with_logging(&path));
        let dgram = dir.file("d.sock");
        contract::survives_stalled_stdout(SERVER, &["--dgram", "--path", &dgram], |_| {
            let client = UnixDatagram::bind(dir.file("c.sock")).unwrap();
            client.set_read_timeout(Some(WAIT)).unwrap();
            let mut reply = [0u8; 100];
            for _ in 0..800 {
                client.send_to(&[b'd'; 60], &dgram).unwrap();
                assert_eq!(client.recv(&mut reply).unwrap(), 65);
            }
        });
        contract::survives_closed_stdout(SERVER, &["--udp"], |addr| {
            let socket = udp::socket();
            let (reply, _) = udp::ask(&socket, addr, b"closed stdout");
            assert_same_bytes(&reply, b"echo:closed stdout", "udp reply");
        });
    }

    #[test]
    fn a_client_that_never_reads_its_datagram_replies_does_not_stop_the_server() {
        let dir = TempDir::new("full");
        let path = dir.file("d.sock");
        let mut server = Server::start(SERVER, &["--dgram", "--path", &path]);
        // Its receive queue fills (the kernel allows a few hundred small datagrams);
        // then the server's replies would block, and are dropped instead.
        let greedy = UnixDatagram::bind(dir.file("greedy.sock")).unwrap();
        for _ in 0..2000 {
            greedy.send_to(b"x", &path).unwrap();
        }
        server.wait_for_line("answering unix:");
        let ran = run(
            CLIENT,
            &["--dgram", "--path", &path, "others still served"],
            b"",
        );
        assert_eq!(ran.stdout, "echo:others still served\n", "{}", ran.stderr);
        assert_clean_shutdown(&server.stop(SIGINT));
    }

    #[test]
    fn the_load_client_measures_a_unix_socket() {
        const LOAD_CLIENT: &str = env!("CARGO_BIN_EXE_11_load_test_client");
        let dir = TempDir::new("load");
        let path = dir.file("s.sock");
        let _server = Server::start(SERVER, &["--path", &path, "--quiet"]);
        let ran = run(
            LOAD_CLIENT,
            &[
                "--unix",
                &path,
                "--conns",
                "4",
                "--requests",
                "50",
                "--size",
                "1000",
            ],
            b"",
        );
        assert!(ran.status.success(), "{}\n{}", ran.stdout, ran.stderr);
        assert!(
            ran.stdout.contains(&format!("over AF_UNIX: {path}")),
            "{}",
            ran.stdout
        );
        assert!(ran.stdout.contains("200 round trips"), "{}", ran.stdout);
        assert!(ran.stdout.contains("errors: 0"), "{}", ran.stdout);
        let nobody = dir.file("nobody.sock");
        let refused = run(LOAD_CLIENT, &["--unix", &nobody], b"");
        assert_error_line(&refused, &[&nobody, "16_local_server"]);
    }

    #[test]
    fn transcript_of_a_session() {
        let dir = TempDir::new("transcript");
        let path = dir.file("16_local.sock");
        let server = Server::start(SERVER, &["--path", &path]);
        let file = dir.file("note.txt");
        std::fs::write(&file, "a note\n").unwrap();
        let mut shown = String::new();
        for args in [
            &["hello", "local"][..],
            &["--pass-fd", &file],
            &["--socketpair", "hi"],
        ] {
            let mut all = vec!["--path", path.as_str()];
            all.extend(args);
            if args[0] == "--socketpair" {
                all = args.to_vec();
            }
            let ran = run(CLIENT, &all, b"");
            assert!(ran.status.success(), "{}", ran.stderr);
            let shown_args = args
                .iter()
                .map(|arg| if *arg == file { "note.txt" } else { arg })
                .collect::<Vec<_>>()
                .join(" ");
            if args[0] == "--pass-fd" {
                // What the test did above, as the reader would do it.
                shown.push_str("$ printf 'a note\\n' > note.txt\n");
            }
            shown.push_str(&format!(
                "$ cargo run --bin 16_local_client -- {shown_args}\n"
            ));
            shown.push_str(&ran.stdout);
        }
        let exited = server.stop(SIGINT);
        let normalise = Normaliser::new()
            .pattern(
                &regex_escape(&path),
                "/tmp/socket-workbook-1000/16_local.sock",
            )
            .pattern(&regex_escape(&file), "note.txt")
            .pattern(r"uid \d+ gid \d+", "uid 1000 gid 1000")
            .pattern(r"child \d+", "child 4243");
        transcript::check("16_client", &normalise.apply(&shown));
        transcript::check(
            "16_server",
            &distinct_pids(&normalise.apply(&exited.stdout)),
        );
    }

    /// Each client process's pid shown as 4241, 4242... in order of appearance.
    fn distinct_pids(text: &str) -> String {
        let pid = regex::Regex::new(r"pid (\d+)").unwrap();
        let mut seen: Vec<String> = Vec::new();
        pid.replace_all(text, |caps: &regex::Captures| {
            let real = caps[1].to_string();
            let index = seen.iter().position(|p| *p == real).unwrap_or_else(|| {
                seen.push(real);
                seen.len() - 1
            });
            format!("pid {}", 4241 + index)
        })
        .into_owned()
    }

    fn regex_escape(text: &str) -> String {
        text.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '/' || c == '_' || c == '-' {
                    c.to_string()
                } else {
                    format!("\\{c}")
                }
            })
            .collect()
    }
}

mod exercises {
    //! The chapter's exercises: each test fails on the lesson as shipped and passes
    //! once the exercise is done. Run one with `cargo run -- exercise 16.1`.
    use super::*;

    #[test]
    #[ignore]
    fn exercise_1_allow_uid_refuses_other_users() {
        let dir = TempDir::new("ex1");
        let path = dir.file("s.sock");
        let someone_else = (uid() + 1).to_string();
        let mut server = Server::start(SERVER, &["--path", &path, "--allow-uid", &someone_else]);
        let mut stream = connect_unix(&path);
        let _ = stream.write_all(b"let me in\n");
        // Closed without an echo: EOF, or ECONNRESET (our bytes were never read).
        let mut got = Vec::new();
        let _ = stream.read_to_end(&mut got);
        assert_same_bytes(&got, b"", "what a refused client gets");
        let refused = server.wait_for_line("refused");
        assert!(refused.contains(&format!("uid {}", uid())), "{refused}");
        assert_clean_shutdown(&server.stop(SIGINT));

        let mine = uid().to_string();
        let _server = Server::start(SERVER, &["--path", &path, "--allow-uid", &mine]);
        round_trip(&mut connect_unix(&path), b"my own uid\n");
    }

    #[test]
    #[ignore]
    fn exercise_2_datagram_client_autobinds() {
        let dir = TempDir::new("ex2");
        let path = dir.file("d.sock");
        let mut server = Server::start(SERVER, &["--dgram", "--path", &path]);
        let ran = run(
            CLIENT,
            &["--dgram", "--autobind", "--path", &path, "hi"],
            b"",
        );
        assert!(ran.status.success(), "{}", ran.stderr);
        assert_eq!(ran.stdout, "echo:hi\n");
        // The kernel named it: an abstract address of five hex digits.
        let received = server.wait_for_line(log::RECEIVED);
        let autobound = regex::Regex::new(r"from unix:@[0-9a-f]{5}: ").unwrap();
        assert!(autobound.is_match(&received), "{received}");
        assert_eq!(dir.names(), vec!["d.sock", "d.sock.lock"]);
    }
}
