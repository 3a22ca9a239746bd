//! Lesson 12: the HTTP server, run as a real program and driven by real clients: our
//! own, curl, Python's http.client, headless Chromium, and raw sockets for what no
//! polite client sends.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::transcript::{self, Normaliser};
use support::*;
use workbook::log;

const SERVER: &str = env!("CARGO_BIN_EXE_12_http_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_12_http_client");
const WORKBOOK: &str = env!("CARGO_BIN_EXE_workbook");
const DEFAULT_PORT: u16 = 10012;

/// `GET path` on HTTP/1.1, as a polite client sends it.
fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes()
}

/// One response as read by the tests: its head (as text) and its body.
struct Reply {
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn status(&self) -> u16 {
        self.head
            .get(9..12)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {:?}", self.head))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.split("\r\n").skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// Reads one response (head up to `\r\n\r\n`, then Content-Length bytes of body;
/// none when `head_only`) from `stream`, keeping what follows in `pending`.
fn read_reply(stream: &mut TcpStream, pending: &mut Vec<u8>, head_only: bool) -> Reply {
    let mut chunk = [0u8; 16 * 1024];
    let mut fill = |pending: &mut Vec<u8>| match stream.read(&mut chunk) {
        Ok(0) => panic!(
            "the server closed the connection; so far: \"{}\"",
            escaped(pending)
        ),
        Ok(n) => pending.extend_from_slice(&chunk[..n]),
        Err(err) => panic!("read failed ({err}); so far: \"{}\"", escaped(pending)),
    };
    let end = loop {
        if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        fill(pending);
    };
    let head = String::from_utf8_lossy(&pending[..end]).into_owned();
    pending.drain(..end);
    let mut reply = Reply {
        head,
        body: Vec::new(),
    };
    let length: usize = match (head_only, reply.header("Content-Length")) {
        (true, _) => 0,
        (false, Some(length)) => length.parse().unwrap(),
        (false, None) => panic!("no Content-Length in {:?}", reply.head),
    };
    while pending.len() < length {
        fill(pending);
    }
    reply.body = pending.drain(..length).collect();
    reply
}

/// Sends `request` on a new connection and reads one response.
fn ask(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut stream = connect(addr);
    stream.write_all(request).unwrap();
    read_reply(&mut stream, &mut Vec::new(), false)
}

/// Reads until the server closes; a reset counts as a close. What came meanwhile.
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(err) => panic!(
                "the server did not close within {WAIT:?} ({err}); got \"{}\"",
                escaped(&got)
            ),
        }
    }
}

/// `Date: Sat, 05 Dec 2026 00:30:44 GMT` and the client's ports, made stable.
fn normaliser(port: u16) -> Normaliser {
    Normaliser::new().port(port, DEFAULT_PORT).pattern(
        r"Date: [A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT",
        "Date: Sun, 22 Nov 2026 10:00:00 GMT",
    )
}

/// A directory under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "workbook-12-{what}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A site for `--root`: files of a few types, a directory with an index, a hidden
/// file, a symbolic link pointing out of the site, and a secret beside the site.
fn site() -> (TempDir, PathBuf) {
    let top = TempDir::new("site");
    let root = top.path().join("www");
    std::fs::create_dir_all(root.join("docs")).unwrap();
    std::fs::write(root.join("index.html"), "<h1>the index</h1>\n").unwrap();
    std::fs::write(root.join("style.css"), "h1 { color: teal; }\n").unwrap();
    std::fs::write(root.join("notes.txt"), "plain notes\n").unwrap();
    std::fs::write(root.join("docs/index.html"), "<p>docs index</p>\n").unwrap();
    std::fs::write(root.join("a b.txt"), "a space in the name\n").unwrap();
    std::fs::write(root.join(".env"), "PASSWORD=hidden-file\n").unwrap();
    std::fs::write(top.path().join("secret.txt"), "TOP SECRET\n").unwrap();
    std::os::unix::fs::symlink(top.path(), root.join("outside")).unwrap();
    (top, root)
}

mod protocol {
    //! The wire protocol, checked by the code `cargo run -- check 12` runs.
    use super::*;

    #[test]
    fn all_checks_pass() {
        support::protocol::all_checks_pass(12, SERVER, &[]);
    }

    #[test]
    fn all_checks_pass_with_root() {
        let (_top, root) = site();
        support::protocol::all_checks_pass(12, SERVER, &["--root", root.to_str().unwrap()]);
    }

    #[test]
    fn the_naive_server_fails_the_checks_for_the_right_reason() {
        let server = Server::start(SERVER, &["--naive"]);
        let port = server.port().to_string();
        let checked = run(
            WORKBOOK,
            &[
                "check",
                "12",
                "--port",
                &port,
                "--timeout",
                "1",
                "--only",
                "http-hello",
            ],
            b"",
        );
        assert_eq!(checked.status.code(), Some(1), "{}", checked.stdout);
        assert!(
            checked.stdout.contains("FAIL http-hello")
                && checked.stdout.contains("no Content-Length"),
            "{}",
            checked.stdout
        );
    }
}

mod lesson {
    use super::*;

    // Our client.

    #[test]
    fn client_fetches_paths_on_one_connection() {
        let mut server = Server::start(SERVER, &[]);
        let port = server.port().to_string();
        let fetched = run(
            CLIENT,
            &["--port", &port, "/hello", "/favicon.ico", "/nope"],
            b"",
        );
        assert!(fetched.status.success(), "{}", fetched.stderr);
        assert_eq!(
            fetched.stdout.matches("* connected").count(),
            1,
            "{}",
            fetched.stdout
        );
        assert!(
            fetched.stdout.contains("\n\nHello WORD\n"),
            "{}",
            fetched.stdout
        );
        assert!(
            fetched
                .stdout
                .contains("(1150 bytes of image/x-icon, not shown; --raw shows them)"),
            "{}",
            fetched.stdout
        );
        server.wait_for_line(log::DISCONNECTED);
        let exited = server.stop(SIGINT);
        assert_clean_shutdown(&exited);
        assert!(
            exited
                .stdout
                .contains("after 3 requests: the client closed"),
            "{}",
            exited.stdout
        );
        transcript::check(
            "12_client",
            &normaliser(exited.listening_port()).apply(&format!(
                "# terminal 2\n\
                 $ cargo run --bin 12_http_client -- /hello /favicon.ico /nope\n\
                 {}\n\
                 # terminal 1: the server, stopped with Ctrl-C afterwards\n\
                 $ cargo run --bin 12_http_server\n\
                 {}",
                fetched.stdout,
                exited
                    .stdout
                    .replace("\nshutting down", "\n^Cshutting down")
            )),
        );
    }

    #[test]
    fn client_reads_past_interim_responses() {
        // A fake server: two 1xx heads (100 Continue, 103 Early Hints), then the
        // final response, on one connection.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port().to_string();
        let fake = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(WAIT)).unwrap();
            let mut got = Vec::new();
            let mut chunk = [0u8; 1024];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                }
            }
            let _ = stream.write_all(
                b"HTTP/1.1 100 Continue\r\n\r\n\
                  HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n\
                  HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nfinal\n",
            );
        });
        let fetched = run(CLIENT, &["--port", &port, "--timeout", "10", "/"], b"");
        fake.join().unwrap();
        assert!(fetched.status.success(), "{}", fetched.stderr);
        assert!(
            fetched.stdout.contains("HTTP/1.1 200 OK") && fetched.stdout.contains("final\n"),
            "the client stopped before the final response:\n{}",
            fetched.stdout
        );
    }

    #[test]
    fn client_raw_shows_the_exact_bytes() {
        let server = Server::start(SERVER, &["--quiet"]);
        let port = server.port().to_string();
        let fetched = run(CLIENT, &["--port", &port, "--raw", "/hello"], b"");
        assert!(fetched.status.success(), "{}", fetched.stderr);
        for line in [
            "> GET /hello HTTP/1.1\\r\\n",
            "> \\r\\n",
            "< HTTP/1.1 200 OK\\r\\n",
            "< Content-Length: 10\\r\\n",
            "< \\r\\n",
            "< Hello WORD",
        ] {
            assert!(
                fetched.stdout.lines().any(|l| l == line),
                "{line:?} missing:\n{}",
                fetched.stdout
            );
        }
        transcript::check(
            "12_raw",
            &normaliser(server.port()).apply(&format!(
                "$ cargo run --bin 12_http_client -- --raw /hello\n{}",
                fetched.stdout
            )),
        );
    }

    #[test]
    fn client_head_prints_the_headers_and_no_body() {
        let server = Server::start(SERVER, &["--quiet"]);
        let port = server.port().to_string();
        let fetched = run(CLIENT, &["--port", &port, "--head", "/hello", "/"], b"");
        assert!(fetched.status.success(), "{}", fetched.stderr);
        assert!(
            fetched.stdout.contains("Content-Length: 10\n"),
            "{}",
            fetched.stdout
        );
        assert!(!fetched.stdout.contains("Hello WORD"), "{}", fetched.stdout);
        assert!(!fetched.stdout.contains("<html"), "{}", fetched.stdout);
    }

    #[test]
    fn client_connects_again_when_the_server_closes() {
        let server = Server::start(SERVER, &["--quiet", "--max-requests", "2"]);
        let port = server.port().to_string();
        let fetched = run(
            CLIENT,
            &[
                "--port", &port, "/hello", "/hello", "/hello", "/hello", "/hello",
            ],
            b"",
        );
        assert!(fetched.status.success(), "{}", fetched.stderr);
        assert_eq!(fetched.stdout.matches("Hello WORD").count(), 5);
        // Requests 1-2, 3-4, 5: three connections, each closed by the server's limit
        // with `Connection: close` on its last response.
        assert_eq!(
            fetched.stdout.matches("* connected").count(),
            3,
            "{}",
            fetched.stdout
        );
        assert_eq!(fetched.stdout.matches("Connection: close").count(), 2);
    }

    #[test]
    fn client_repeat_measures_keep_alive_and_new_connections() {
        let server = Server::start(SERVER, &["--quiet"]);
        let port = server.port().to_string();
        let kept = run(CLIENT, &["--port", &port, "--repeat", "50", "/hello"], b"");
        assert!(kept.status.success(), "{}", kept.stderr);
        assert!(
            kept.stdout.starts_with("50 requests on 1 connection in "),
            "{}",
            kept.stdout
        );
        let closed = run(
            CLIENT,
            &["--port", &port, "--repeat", "50", "--close", "/hello"],
            b"",
        );
        assert!(closed.status.success(), "{}", closed.stderr);
        assert!(
            closed
                .stdout
                .starts_with("50 requests on 50 connections in "),
            "{}",
            closed.stdout
        );
    }

    #[test]
    fn client_waits_in_vain_for_the_end_of_a_naive_body() {
        let server = Server::start(SERVER, &["--naive"]);
        let port = server.port().to_string();
        let fetched = run(CLIENT, &["--port", &port, "--timeout", "1", "/"], b"");
        assert_eq!(fetched.status.code(), Some(1), "{}", fetched.stdout);
        assert!(
            fetched.stdout.contains("HTTP/1.1 200 OK\n\nHello WORD\n"),
            "{}",
            fetched.stdout
        );
        assert!(
            fetched
                .stderr
                .contains("without Content-Length, only a close ends the body"),
            "{}",
            fetched.stderr
        );
        let exited = server.stop(SIGINT);
        assert_clean_shutdown(&exited);
        transcript::check(
            "12_naive",
            &normaliser(exited.listening_port())
                .pattern(r"nothing for 1s", "nothing for 1s")
                .apply(&format!(
                    "# terminal 2: our client, which gives up after a second without a byte\n\
                     $ cargo run --bin 12_http_client -- --timeout 1 /\n\
                     {}{}\n\
                     # terminal 1\n\
                     $ cargo run --bin 12_http_server -- --naive\n\
                     {}",
                    fetched.stdout,
                    fetched.stderr,
                    exited
                        .stdout
                        .replace("\nshutting down", "\n^Cshutting down")
                )),
        );
    }

    #[test]
    fn contract_client() {
        contract::rejects_bad_flags(CLIENT);
        contract::client_reports_no_server(CLIENT, "12_http_server", &[]);
        assert_usage_error(&run(CLIENT, &["no-slash"], b""));
        assert_usage_error(&run(CLIENT, &["--repeat", "0"], b""));
    }

    #[test]
    fn client_with_stdout_closed_stops_quietly() {
        let server = Server::start(SERVER, &["--quiet"]);
        let port = server.port().to_string();
        let exited = run_with_closed_stdout(CLIENT, &["--port", &port, "/", "/hello"], b"");
        assert_quiet_stop(&exited, "12_http_client with stdout closed");
    }

    // Other real clients.

    #[test]
    fn curl_include_head_and_http_1_0() {
        if !tool_available("curl", &["--version"]) {
            return;
        }
        let mut server = Server::start(SERVER, &[]);
        let url = format!("http://{}/hello", server.addr);
        let curl = |args: &[&str]| {
            let mut all = vec!["-sS", "--max-time", "20"];
            all.extend(args);
            let exited = run("curl", &all, b"");
            assert!(exited.status.success(), "curl {args:?}: {}", exited.stderr);
            exited.stdout
        };
        let included = curl(&["-i", &url]);
        assert!(included.starts_with("HTTP/1.1 200 OK\r\n"), "{included:?}");
        assert!(included.ends_with("\r\n\r\nHello WORD"), "{included:?}");
        let head = curl(&["-I", &url]);
        assert!(head.contains("Content-Length: 10\r\n"), "{head:?}");
        assert!(!head.contains("Hello"), "{head:?}");
        let old = curl(&["--http1.0", "-i", &url]);
        assert!(old.contains("Connection: close\r\n"), "{old:?}");
        server.wait_for_line("HTTP/1.0");
        let line = server.wait_for_line(log::DISCONNECTED);
        assert!(line.contains("after 1 request: HTTP/1.0"), "{line}");
    }

    #[test]
    fn curl_two_urls_share_one_connection() {
        if !tool_available("curl", &["--version"]) {
            return;
        }
        let mut server = Server::start(SERVER, &[]);
        let hello = format!("http://{}/hello", server.addr);
        let root = format!("http://{}/", server.addr);
        let exited = run(
            "curl",
            &["-sS", "--max-time", "20", &hello, "-o", "/dev/null", &root],
            b"",
        );
        assert!(exited.status.success(), "{}", exited.stderr);
        assert!(
            exited.stdout.contains("GET / HTTP/1.1"),
            "{}",
            exited.stdout
        );
        let line = server.wait_for_line(log::DISCONNECTED);
        assert!(line.contains("after 2 requests"), "{line}");
        let connections = server
            .seen
            .iter()
            .filter(|l| l.starts_with(log::CONNECTED))
            .count();
        assert_eq!(connections, 1, "{}", server.last_lines());
    }

    #[test]
    fn python_http_client_keeps_one_connection() {
        if !tool_available("python3", &["--version"]) {
            return;
        }
        let server = Server::start(SERVER, &[]);
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/http_keep_alive.py"
        );
        let port = server.port().to_string();
        let exited = run("python3", &[script, &port], b"");
        assert!(exited.status.success(), "{}", exited.stderr);
        for line in [
            "GET /hello 200 OK 10 10",
            "HEAD /hello 200 OK 10 0",
            "GET /no/such/page 404 Not Found",
            "connections: 1",
        ] {
            assert!(exited.stdout.contains(line), "{line:?}:\n{}", exited.stdout);
        }
        let exited = server.stop(SIGINT);
        assert!(
            exited.stdout.contains("after 5 requests"),
            "{}",
            exited.stdout
        );
    }

    /// Runs headless Chromium with `args` on `url` and returns the DOM it dumps.
    fn chromium_dom(args: &[&str], url: &str) -> String {
        let profile = TempDir::new("chromium");
        let mut child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ])
            .arg(format!("--user-data-dir={}", profile.arg()))
            .args(args)
            .args(["--dump-dom", url])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start chromium");
        let mut stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut dom = String::new();
            let _ = stdout.read_to_string(&mut dom);
            dom
        });
        // A browser on a loaded machine: a minute, then it is killed.
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium did not finish within a minute");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        reader.join().unwrap_or_default()
    }

    #[test]
    fn chromium_shows_its_own_user_agent() {
        if !tool_available("chromium", &["--version"]) {
            return;
        }
        let mut server = Server::start(SERVER, &[]);
        let dom = chromium_dom(&[], &format!("http://{}/", server.addr));
        assert!(
            dom.contains("<pre id=\"request-line\">GET / HTTP/1.1</pre>"),
            "{dom}"
        );
        assert!(
            dom.contains("<th>User-Agent</th><td>Mozilla/5.0") && dom.contains("HeadlessChrome"),
            "{dom}"
        );
        let line = server.wait_for_line("\"GET / HTTP/1.1\"");
        assert!(line.contains("200 OK"), "{line}");
    }

    #[test]
    fn chromium_shows_a_script_in_a_header_as_text() {
        if !tool_available("chromium", &["--version"]) {
            return;
        }
        let server = Server::start(SERVER, &["--quiet"]);
        let dom = chromium_dom(
            &["--user-agent=<script>document.title=\"pwned\"</script>"],
            &format!("http://{}/", server.addr),
        );
        assert!(
            dom.contains("<title>What your browser sent</title>"),
            "{dom}"
        );
        assert!(
            dom.contains("&lt;script&gt;document.title=\"pwned\"&lt;/script&gt;"),
            "{dom}"
        );
        assert!(!dom.contains("<script"), "the header became markup:\n{dom}");
    }

    // Raw sockets: what polite clients do not send.

    #[test]
    fn an_idle_connection_is_closed_after_the_timeout() {
        let mut server = Server::start(SERVER, &["--timeout", "0.5"]);
        let mut idle = connect(server.addr);
        // Another client meanwhile is served at once.
        let reply = ask(server.addr, &get("/hello"));
        assert_eq!(reply.status(), 200);
        assert!(read_until_closed(&mut idle).is_empty());
        let line = server.wait_for_line("after 0 requests: idle");
        assert!(line.starts_with(log::DISCONNECTED), "{line}");
    }

    #[test]
    fn a_head_that_comes_too_slowly_gets_408() {
        let server = Server::start(SERVER, &["--timeout", "0.5"]);
        let mut stream = connect(server.addr);
        stream
            .write_all(b"GET /hello HTTP/1.1\r\nHost: te")
            .unwrap();
        let mut pending = Vec::new();
        let reply = read_reply(&mut stream, &mut pending, false);
        assert_eq!(reply.status(), 408, "{}", reply.head);
        assert_eq!(reply.header("Connection"), Some("close"));
        assert!(read_until_closed(&mut stream).is_empty());
    }

    #[test]
    fn a_body_that_comes_too_slowly_is_cut_off() {
        let mut server = Server::start(SERVER, &["--timeout", "0.5"]);
        let mut stream = connect(server.addr);
        stream
            .write_all(b"POST /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 200\r\n\r\n")
            .unwrap();
        // One byte of body every 100 ms: each read gets a byte well within the
        // timeout, but the whole body would take 20 s.
        let mut writer = stream.try_clone().unwrap();
        let trickle = std::thread::spawn(move || {
            let mut sent = 0;
            while sent < 200 && writer.write_all(b"x").is_ok() {
                sent += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            sent
        });
        let got = read_until_closed(&mut stream);
        assert_same_bytes(&got, b"", "the answer to a body that trickles");
        server.wait_for_line("the body did not come in time");
        drop(stream);
        assert!(trickle.join().unwrap() < 200, "the whole body was accepted");
    }

    #[test]
    fn max_threads_makes_the_next_client_wait_in_the_backlog() {
        let mut server = Server::start(SERVER, &["--max-threads", "1", "--timeout", "30"]);
        // The only thread waits for this connection's first request.
        let holder = connect(server.addr);
        server.wait_for_line(log::CONNECTED);
        // The next one connects (the kernel queues it) and asks, but is not served...
        let mut waiting = connect(server.addr);
        waiting.write_all(&get("/hello")).unwrap();
        waiting
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut byte = [0u8; 1];
        let early = waiting.read(&mut byte);
        assert!(
            matches!(&early, Err(err) if err.kind() == std::io::ErrorKind::WouldBlock),
            "answered while the only thread was taken: {early:?}"
        );
        // ...until the first leaves.
        drop(holder);
        waiting.set_read_timeout(Some(WAIT)).unwrap();
        let reply = read_reply(&mut waiting, &mut Vec::new(), false);
        assert_same_bytes(&reply.body, b"Hello WORD", "the waiting client's answer");
    }

    #[test]
    fn the_request_limit_closes_the_connection() {
        let server = Server::start(SERVER, &["--max-requests", "2"]);
        let mut stream = connect(server.addr);
        stream
            .write_all(&[get("/hello"), get("/hello"), get("/hello")].concat())
            .unwrap();
        let mut pending = Vec::new();
        let first = read_reply(&mut stream, &mut pending, false);
        assert_eq!(first.header("Connection"), Some("keep-alive"));
        let second = read_reply(&mut stream, &mut pending, false);
        assert_eq!(second.header("Connection"), Some("close"));
        pending.extend(read_until_closed(&mut stream));
        assert_same_bytes(&pending, b"", "after the second response (the limit)");
    }

    #[test]
    fn bodies_the_server_cannot_frame_are_refused_and_closed() {
        let server = Server::start(SERVER, &[]);
        for (request, status) in [
            (
                &b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2000000\r\n\r\n"[..],
                413,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                501,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5x\r\n\r\n",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\n",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                400,
            ),
            (b"GET / HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: t\r\n folded: x\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: t\r\nX: a\rb\r\n\r\n", 400),
            (b"GET  / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
            (b"GET /%zz HTTP/1.1\r\nHost: t\r\n\r\n", 400),
            (b"GET /a%00b HTTP/1.1\r\nHost: t\r\n\r\n", 400),
            (
                b"GET /a%0d%0aSet-Cookie:%20x HTTP/1.1\r\nHost: t\r\n\r\n",
                400,
            ),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a b/c@d\r\n\r\n", 400),
        ] {
            let mut stream = connect(server.addr);
            stream.write_all(request).unwrap();
            let reply = read_reply(&mut stream, &mut Vec::new(), false);
            assert_eq!(
                reply.status(),
                status,
                "sent \"{}\": {}",
                escaped(request),
                reply.head
            );
            assert_eq!(reply.header("Connection"), Some("close"), "{}", reply.head);
            assert!(
                read_until_closed(&mut stream).is_empty(),
                "sent \"{}\"",
                escaped(request)
            );
        }
    }

    #[test]
    fn expect_100_continue_gets_a_final_status_or_continue_at_once() {
        // --timeout 30: without an answer to Expect, the server would wait for the
        // body for that long, and the test's reads (20 s) give up first.
        let server = Server::start(SERVER, &["--quiet", "--timeout", "30"]);
        // A POST is refused from its head alone: 405 at once, then close, since the
        // body the client holds back is never read.
        let mut stream = connect(server.addr);
        stream
            .write_all(
                b"POST /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\
                  Expect: 100-continue\r\n\r\n",
            )
            .unwrap();
        let refused = read_reply(&mut stream, &mut Vec::new(), false);
        assert_eq!(refused.status(), 405, "{}", refused.head);
        assert_eq!(
            refused.header("Connection"),
            Some("close"),
            "{}",
            refused.head
        );
        assert!(read_until_closed(&mut stream).is_empty());
        // A body the server will read: `100 Continue` first, then the response.
        let mut stream = connect(server.addr);
        stream
            .write_all(
                b"GET /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\
                  Expect: 100-continue\r\n\r\n",
            )
            .unwrap();
        let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
        let got = read_exactly(&mut stream, interim.len());
        assert_same_bytes(&got, interim, "the answer to Expect: 100-continue");
        stream.write_all(b"hello").unwrap();
        let reply = read_reply(&mut stream, &mut Vec::new(), false);
        assert_eq!(reply.status(), 200, "{}", reply.head);
        assert_same_bytes(&reply.body, b"Hello WORD", "the body of /hello");
    }

    #[test]
    fn curl_expect_100_continue_gets_405() {
        if !tool_available("curl", &["--version"]) {
            return;
        }
        // The server's timeout (5 s) is shorter than curl's wait for `100 Continue`:
        // a server that waits for the body gives up first, and curl gets no reply.
        let server = Server::start(SERVER, &["--quiet"]);
        let url = format!("http://{}/hello", server.addr);
        let body = "x".repeat(1000);
        let exited = run(
            "curl",
            &[
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "15",
                "--expect100-timeout",
                "10",
                "-H",
                "Expect: 100-continue",
                "--data-binary",
                &body,
                &url,
            ],
            b"",
        );
        assert_eq!(exited.stdout, "405", "curl: {}", exited.stderr);
    }

    #[test]
    fn head_gets_the_headers_get_would_get() {
        let (_top, root) = site();
        let server = Server::start(SERVER, &["--quiet", "--root", root.to_str().unwrap()]);
        let without_date = |head: &str| -> String {
            head.split("\r\n")
                .filter(|line| !line.starts_with("Date: "))
                .collect::<Vec<_>>()
                .join("\r\n")
        };
        for path in [
            "/",
            "/hello",
            "/favicon.ico",
            "/notes.txt",
            "/docs/",
            "/nope",
        ] {
            let mut stream = connect(server.addr);
            let mut pending = Vec::new();
            stream.write_all(&get(path)).unwrap();
            let full = read_reply(&mut stream, &mut pending, false);
            stream
                .write_all(format!("HEAD {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
                .unwrap();
            let head = read_reply(&mut stream, &mut pending, true);
            assert_eq!(
                without_date(&head.head),
                without_date(&full.head),
                "HEAD {path} and GET {path}"
            );
            // Nothing after HEAD's head: the next response comes at once.
            stream.write_all(&get("/hello")).unwrap();
            let next = read_reply(&mut stream, &mut pending, false);
            assert_same_bytes(&next.body, b"Hello WORD", "the response after HEAD");
        }
    }

    #[test]
    fn a_refused_head_request_gets_no_body() {
        let server = Server::start(SERVER, &["--quiet"]);
        for request in [
            &b"HEAD / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"[..],
            b"HEAD / HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n",
            b"HEAD /%zz HTTP/1.1\r\nHost: t\r\n\r\n",
            b"HEAD / HTTP/1.1\r\nHost: t\r\nContent-Length: 2000000\r\n\r\n",
        ] {
            let mut stream = connect(server.addr);
            stream.write_all(request).unwrap();
            let mut pending = Vec::new();
            let reply = read_reply(&mut stream, &mut pending, true);
            assert!(reply.status() >= 400, "{}", reply.head);
            pending.extend(read_until_closed(&mut stream));
            assert_same_bytes(
                &pending,
                b"",
                &format!("after the head of the refusal of \"{}\"", escaped(request)),
            );
        }
    }

    #[test]
    fn the_log_names_a_client_that_reset_before_it_was_served() {
        let mut server = Server::start(SERVER, &["--max-threads", "1"]);
        // The one thread is busy with this client...
        let mut first = connect(server.addr);
        first.write_all(&get("/hello")).unwrap();
        read_reply(&mut first, &mut Vec::new(), false);
        // ... so this one waits in the backlog, and resets before it is accepted.
        let second = connect(server.addr);
        let address = second.local_addr().unwrap().to_string();
        reset(second);
        drop(first);
        let line = server.wait_for_line(&format!("{} {address} ->", log::CONNECTED));
        assert!(!line.contains('?'), "{line}");
    }

    #[test]
    fn bare_line_feeds_and_leading_empty_lines_are_accepted() {
        let server = Server::start(SERVER, &["--quiet"]);
        let reply = ask(server.addr, b"\r\n\nGET /hello HTTP/1.1\nHost: nc\n\n");
        assert_eq!(reply.status(), 200, "{}", reply.head);
        assert_same_bytes(&reply.body, b"Hello WORD", "the body of /hello");
    }

    #[test]
    fn the_page_escapes_what_the_client_sent() {
        let server = Server::start(SERVER, &["--quiet"]);
        let reply = ask(
            server.addr,
            b"GET /?q=<b>\"x\" HTTP/1.1\r\nHost: t\r\nX-Evil: <img src=x onerror=alert(1)> 'q' \"d\"\r\n\r\n",
        );
        let page = String::from_utf8_lossy(&reply.body);
        assert!(!page.contains("<img"), "{page}");
        assert!(!page.contains("<b>"), "{page}");
        assert!(
            page.contains("&lt;img src=x onerror=alert(1)&gt; &#39;q&#39; &quot;d&quot;"),
            "{page}"
        );
        assert_eq!(reply.header("Cache-Control"), Some("no-store"));
    }

    #[test]
    fn files_under_root_with_their_types() {
        let (_top, root) = site();
        let server = Server::start(SERVER, &["--quiet", "--root", root.to_str().unwrap()]);
        for (path, status, content_type, body) in [
            (
                "/index.html",
                200,
                "text/html; charset=utf-8",
                "<h1>the index</h1>\n",
            ),
            (
                "/style.css",
                200,
                "text/css; charset=utf-8",
                "h1 { color: teal; }\n",
            ),
            (
                "/notes.txt?v=2",
                200,
                "text/plain; charset=utf-8",
                "plain notes\n",
            ),
            (
                "/docs/",
                200,
                "text/html; charset=utf-8",
                "<p>docs index</p>\n",
            ),
            (
                "/a%20b.txt",
                200,
                "text/plain; charset=utf-8",
                "a space in the name\n",
            ),
            (
                "/missing.html",
                404,
                "text/plain; charset=utf-8",
                "nothing at /missing.html\n",
            ),
        ] {
            let reply = ask(server.addr, &get(path));
            assert_eq!(reply.status(), status, "{path}: {}", reply.head);
            assert_eq!(reply.header("Content-Type"), Some(content_type), "{path}");
            assert_same_bytes(&reply.body, body.as_bytes(), path);
        }
        // The server's own pages come first.
        let hello = ask(server.addr, &get("/hello"));
        assert_same_bytes(&hello.body, b"Hello WORD", "/hello with --root");
        // HEAD: the file's length, no body; the next response follows at once.
        let mut stream = connect(server.addr);
        stream
            .write_all(
                &[
                    b"HEAD /notes.txt HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
                    get("/hello"),
                ]
                .concat(),
            )
            .unwrap();
        let mut pending = Vec::new();
        let head = read_reply(&mut stream, &mut pending, true);
        assert_eq!(head.header("Content-Length"), Some("12"));
        let next = read_reply(&mut stream, &mut pending, false);
        assert_same_bytes(&next.body, b"Hello WORD", "the response after HEAD");
    }

    #[test]
    fn paths_that_leave_root_are_refused() {
        let (_top, root) = site();
        std::os::unix::fs::symlink(root.join(".env"), root.join("cfg")).unwrap();
        let server = Server::start(SERVER, &["--root", root.to_str().unwrap()]);
        for (path, status) in [
            ("/../secret.txt", 403),
            ("/%2e%2e/secret.txt", 403),
            ("/%2E%2E%2Fsecret.txt", 403),
            ("/docs/../../secret.txt", 403),
            ("/docs/%2e%2e/%2e%2e/secret.txt", 403),
            ("/..%2fsecret.txt", 403),
            ("/outside/secret.txt", 403),
            ("/outside", 403),
            ("//etc/passwd", 404),
            ("/etc/passwd", 404),
            ("/.env", 404),
            ("/docs/./../.env", 403),
            ("/docs/.hidden", 404),
            // A link inside the site to a hidden file: its own name is not hidden.
            ("/cfg", 404),
            // A file asked for as a directory.
            ("/notes.txt/", 404),
        ] {
            let reply = ask(server.addr, &get(path));
            assert_eq!(reply.status(), status, "{path}: {}", reply.head);
            let body = String::from_utf8_lossy(&reply.body);
            assert!(
                !body.contains("TOP SECRET")
                    && !body.contains("PASSWORD")
                    && !body.contains("root:"),
                "{path} leaked: {body}"
            );
        }
        // Not even a request line that curl would clean up first.
        let raw = ask(
            server.addr,
            b"GET ../secret.txt HTTP/1.1\r\nHost: t\r\n\r\n",
        );
        assert_eq!(raw.status(), 400, "{}", raw.head);
    }

    #[test]
    fn naive_sends_no_length_and_never_closes() {
        let server = Server::start(SERVER, &["--naive"]);
        let mut first = connect(server.addr);
        first.write_all(&get("/")).unwrap();
        let reply = read_exactly(&mut first, 29);
        assert_same_bytes(
            &reply,
            b"HTTP/1.1 200 OK\r\n\r\nHello WORD",
            "the naive reply",
        );
        // Nothing more comes, and the connection stays open: no byte and no close
        // within half a second. A client cannot know that the body is complete.
        first
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut byte = [0u8; 1];
        let more = first.read(&mut byte);
        assert!(
            matches!(&more, Err(err) if err.kind() == std::io::ErrorKind::WouldBlock),
            "expected the connection open and silent, got {more:?}"
        );
        // Only when the next client is accepted is the first connection closed.
        let mut second = connect(server.addr);
        second.write_all(&get("/")).unwrap();
        assert_eq!(read_exactly(&mut second, 29).len(), 29);
        first.set_read_timeout(Some(WAIT)).unwrap();
        assert!(read_until_closed(&mut first).is_empty());
    }

    #[test]
    fn naive_makes_curl_wait() {
        if !tool_available("curl", &["--version"]) {
            return;
        }
        let server = Server::start(SERVER, &["--naive"]);
        let url = format!("http://{}/", server.addr);
        let exited = run("curl", &["-sS", "--max-time", "1", "-i", &url], b"");
        // 28: curl's "operation timed out", with the whole reply already received.
        assert_eq!(exited.status.code(), Some(28), "{}", exited.stderr);
        assert_eq!(exited.stdout, "HTTP/1.1 200 OK\r\n\r\nHello WORD");
    }

    #[test]
    fn naive_stops_on_sigint_while_a_client_says_nothing() {
        let mut server = Server::start(SERVER, &["--naive"]);
        let _silent = connect(server.addr);
        server.wait_for_line(log::CONNECTED);
        let exited = server.stop(SIGINT);
        assert_clean_shutdown(&exited);
    }

    #[test]
    fn sigint_with_an_idle_client_and_one_that_does_not_read() {
        let (top, root) = site();
        // 32 MiB: more than the socket buffers hold, so the thread blocks in write.
        let big = vec![b'x'; 32 << 20];
        std::fs::write(root.join("big.bin"), &big).unwrap();
        let mut server = Server::start(SERVER, &["--root", root.to_str().unwrap()]);
        let mut idle = connect(server.addr);
        let mut stalled = connect(server.addr);
        stalled.write_all(&get("/big.bin")).unwrap();
        server.wait_for_line("conn-2");
        let exited = server.stop(SIGINT);
        assert_clean_shutdown(&exited);
        assert!(
            exited.stdout.contains("all threads joined"),
            "{}",
            exited.stdout
        );
        assert!(read_until_closed(&mut idle).is_empty());
        drop(top);
    }

    #[test]
    fn log_lines_use_the_shared_words() {
        let mut server = Server::start(SERVER, &[]);
        let reply = ask(server.addr, &get("/nope"));
        assert_eq!(reply.status(), 404);
        let connected = server.wait_for_line(log::CONNECTED);
        assert!(connected.contains(" -> "), "{connected}");
        let received = server.wait_for_line(log::RECEIVED);
        assert!(
            received.starts_with(&format!("{} \"GET /nope HTTP/1.1\" from ", log::RECEIVED))
                && received.ends_with(": 404 Not Found, 17 bytes"),
            "{received}"
        );
        let bad = ask(server.addr, b"garbage\r\n\r\n");
        assert_eq!(bad.status(), 400);
        let refused = server.wait_for_line("garbage");
        assert!(refused.contains("400 Bad Request ("), "{refused}");
    }

    #[test]
    fn quiet_logs_only_the_first_and_last_lines() {
        let server = Server::start(SERVER, &["--quiet"]);
        for _ in 0..3 {
            assert_eq!(ask(server.addr, &get("/hello")).status(), 200);
        }
        let exited = server.stop(SIGTERM);
        assert_clean_shutdown(&exited);
        assert_eq!(exited.stdout.lines().count(), 2, "{}", exited.stdout);
    }

    #[test]
    fn contract_server() {
        contract::server_reports_port_in_use(SERVER, &[]);
        contract::server_reports_bad_host(SERVER);
        contract::rejects_bad_flags(SERVER);
        for bad in [
            &["--timeout", "0"][..],
            &["--timeout", "soon"],
            &["--max-requests", "0"],
            &["--max-threads", "0"],
            &["--root", "/no/such/directory"],
            &["--root", "/etc/hostname"],
        ] {
            assert_usage_error(&run(SERVER, bad, b""));
        }
        contract::server_stops_on(SERVER, &[], SIGINT);
        contract::server_stops_on(SERVER, &["--quiet"], SIGTERM);
        contract::server_stops_on(SERVER, &["--naive"], SIGTERM);
    }

    /// Enough requests to log more than a pipe holds (64 KiB, about 110 bytes a
    /// request), on keep-alive connections, and one client that resets.
    fn busy_with_logging(addr: SocketAddr) {
        for _ in 0..10 {
            let mut stream = connect(addr);
            let mut requests = Vec::new();
            for _ in 0..99 {
                requests.extend(get("/hello"));
            }
            requests.extend(b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
            stream.write_all(&requests).unwrap();
            let all = read_until_closed(&mut stream);
            assert_eq!(all.windows(10).filter(|w| w == b"Hello WORD").count(), 100);
        }
        let mut doomed = connect(addr);
        doomed.write_all(b"GET / HTTP/1.1\r\n").unwrap();
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
    fn serves_and_stops_with_stdout_stalled_naive() {
        contract::survives_stalled_stdout(SERVER, &["--naive"], |addr| {
            // Each client: a 1 KiB request logged (shortened) and closed by the next.
            for _ in 0..800 {
                let mut stream = connect(addr);
                stream.write_all(&get("/")).unwrap();
                assert_eq!(read_exactly(&mut stream, 29).len(), 29);
            }
        });
    }

    #[test]
    fn the_front_door_runs_and_checks_lesson_12() {
        let ran = run_front_door(WORKBOOK, &["run", "12"], b"");
        assert!(ran.status.success(), "{}\n{}", ran.stdout, ran.stderr);
        assert!(ran.stdout.contains("client │ Hello WORD"), "{}", ran.stdout);
        assert!(
            ran.stdout.contains("server │ shutting down"),
            "{}",
            ran.stdout
        );
        let server = Server::start(SERVER, &["--quiet"]);
        let port = server.port().to_string();
        let checked = run_front_door(WORKBOOK, &["check", "12", "--port", &port], b"");
        assert!(checked.status.success(), "{}", checked.stdout);
        assert!(
            checked.stdout.contains("20 passed, 0 failed"),
            "{}",
            checked.stdout
        );
    }
}

mod exercises {
    //! The chapter's exercises: each test fails on the lesson as shipped and passes
    //! once the exercise is done. Run one with `cargo run -- exercise 12.1`.
    use super::*;

    #[test]
    #[ignore = "exercise 12.1: cargo run -- exercise 12.1"]
    fn exercise_1_naive_says_where_the_body_ends() {
        let server = Server::start(SERVER, &["--naive"]);
        let mut stream = connect(server.addr);
        stream.write_all(&get("/")).unwrap();
        // Either way tells the client that the body is over: a Content-Length, or
        // the server closing the connection right after the body.
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                if head.contains("\r\ncontent-length: 10") && got.len() >= end + 4 + 10 {
                    assert_same_bytes(&got[end + 4..], b"Hello WORD", "the body");
                    return;
                }
            }
            match stream.read(&mut chunk) {
                Ok(0) => {
                    assert!(
                        got.ends_with(b"\r\n\r\nHello WORD"),
                        "closed after \"{}\"",
                        escaped(&got)
                    );
                    return;
                }
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(err) => panic!(
                    "after 5 s ({err}) the reply is \"{}\": no `Content-Length: 10`, and the \
                     connection is still open. The client cannot tell that the body is over.",
                    escaped(&got)
                ),
            }
        }
    }

    #[test]
    #[ignore = "exercise 12.2: cargo run -- exercise 12.2"]
    fn exercise_2_post_echo_sends_the_body_back() {
        let server = Server::start(SERVER, &["--quiet"]);
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut request = format!(
            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(&body);
        request.extend(get("/hello"));
        let mut stream = connect(server.addr);
        let mut writer = stream.try_clone().unwrap();
        // Written on a thread: the echo comes back while we are still sending.
        let sending = std::thread::spawn(move || writer.write_all(&request));
        let mut pending = Vec::new();
        let echo = read_reply(&mut stream, &mut pending, false);
        assert_eq!(echo.status(), 200, "POST /echo: {}", echo.head);
        assert_eq!(
            echo.header("Content-Type"),
            Some("application/octet-stream"),
            "bytes of any kind: {}",
            echo.head
        );
        assert_same_bytes(&echo.body, &body, "the body of the echo");
        let next = read_reply(&mut stream, &mut pending, false);
        assert_same_bytes(&next.body, b"Hello WORD", "the response after the echo");
        sending.join().unwrap().unwrap();
    }

    #[test]
    #[ignore = "exercise 12.3: cargo run -- exercise 12.3"]
    fn exercise_3_etag_and_304_not_modified() {
        let (_top, root) = site();
        let server = Server::start(SERVER, &["--quiet", "--root", root.to_str().unwrap()]);
        let first = ask(server.addr, &get("/notes.txt"));
        let etag = first
            .header("ETag")
            .unwrap_or_else(|| panic!("no ETag header on a file: {}", first.head))
            .to_string();
        assert!(
            etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'),
            "an ETag is a quoted string: {etag}"
        );
        // The same ETag in If-None-Match: 304, no body; the next response follows.
        let mut stream = connect(server.addr);
        let conditional =
            format!("GET /notes.txt HTTP/1.1\r\nHost: t\r\nIf-None-Match: {etag}\r\n\r\n");
        stream
            .write_all(&[conditional.into_bytes(), get("/hello")].concat())
            .unwrap();
        let mut pending = Vec::new();
        let not_modified = read_reply(&mut stream, &mut pending, true);
        assert_eq!(not_modified.status(), 304, "{}", not_modified.head);
        assert!(
            matches!(not_modified.header("Content-Length"), None | Some("12")),
            "a 304's Content-Length, if any, is the 200's (RFC 9110, 8.6): {}",
            not_modified.head
        );
        assert_eq!(not_modified.header("ETag"), Some(etag.as_str()));
        let next = read_reply(&mut stream, &mut pending, false);
        assert_same_bytes(
            &next.body,
            b"Hello WORD",
            "the response after the 304 (did it send a body?)",
        );
        // Another ETag: the file, whole.
        let other = ask(
            server.addr,
            b"GET /notes.txt HTTP/1.1\r\nHost: t\r\nIf-None-Match: \"nope\"\r\n\r\n",
        );
        assert_eq!(other.status(), 200, "{}", other.head);
        assert_same_bytes(&other.body, b"plain notes\n", "the file");
    }

    #[test]
    #[ignore = "exercise 12.4: cargo run -- exercise 12.4"]
    fn exercise_4_a_directory_without_its_slash_is_redirected() {
        let (_top, root) = site();
        let server = Server::start(SERVER, &["--quiet", "--root", root.to_str().unwrap()]);
        let moved = ask(server.addr, &get("/docs?x=1"));
        assert_eq!(moved.status(), 301, "{}", moved.head);
        assert_eq!(moved.header("Location"), Some("/docs/"), "{}", moved.head);
        let index = ask(server.addr, &get("/docs/"));
        assert_eq!(index.status(), 200, "{}", index.head);
        assert_same_bytes(&index.body, b"<p>docs index</p>\n", "/docs/");
        let file = ask(server.addr, &get("/notes.txt"));
        assert_eq!(file.status(), 200, "a file is no directory: {}", file.head);
        // The Location is a URL: what the path decoded to is encoded again, or
        // `/q%3Fx` would be sent to `/q?x/` (the path `/q` with a query).
        std::fs::create_dir_all(root.join("q?x")).unwrap();
        std::fs::create_dir_all(root.join("a b")).unwrap();
        for (path, location) in [("/q%3Fx", "/q%3Fx/"), ("/a%20b", "/a%20b/")] {
            let moved = ask(server.addr, &get(path));
            assert_eq!(moved.status(), 301, "{path}: {}", moved.head);
            assert_eq!(
                moved.header("Location"),
                Some(location),
                "{path}: {}",
                moved.head
            );
        }
    }
}
