//! Lesson 14: the echo server over TLS, run as a real program.
//!
//! - `protocol`: what any TLS echo server must do on the wire, the checks that
//!   `cargo run -- check 14 --port PORT --ca FILE` puts any server through;
//! - `lesson`: this server and client's own rules: the certificates it makes, its log
//!   (not TLS, truncation, handshake failures), its handshake timeout, clients this
//!   project did not write (Python's ssl, openssl s_client), its shutdown;
//! - `exercises`: the chapter's exercises, `#[ignore]`d; run one with
//!   `cargo run -- exercise 14.1` or `cargo test --test 14_tls -- --ignored exercise_1`.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustls::{ClientConnection, StreamOwned};
use support::transcript::{self, Normaliser};
use support::*;
use workbook::protocol::TlsTarget;
use workbook::{log, tls};

const SERVER: &str = env!("CARGO_BIN_EXE_14_tls_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_14_tls_client");

/// A scratch folder for one test's certificates, removed at the end.
struct CertDir(PathBuf);

impl CertDir {
    fn new() -> CertDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "workbook-14-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        CertDir(path)
    }

    /// Where the server makes its certificates (it creates the folder itself).
    fn certs(&self) -> PathBuf {
        self.0.join("certs")
    }

    fn certs_arg(&self) -> String {
        self.certs().display().to_string()
    }

    fn ca(&self) -> PathBuf {
        tls::ca_file(&self.certs())
    }

    fn ca_arg(&self) -> String {
        self.ca().display().to_string()
    }
}

impl Drop for CertDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server with certificates of its own making in a fresh folder.
fn start(dir: &CertDir, more: &[&str]) -> Server {
    let certs = dir.certs_arg();
    let mut args = vec!["--cert-dir", certs.as_str()];
    args.extend(more);
    Server::start(SERVER, &args)
}

/// A verified TLS session to the server, from the test itself (rustls).
fn session(addr: SocketAddr, ca: &Path) -> StreamOwned<ClientConnection, TcpStream> {
    let config = tls::client_config(ca).unwrap();
    let name = tls::server_name("localhost").unwrap();
    let mut connection = ClientConnection::new(config, name).unwrap();
    let mut stream = connect(addr);
    stream.set_read_timeout(Some(WAIT)).unwrap();
    while connection.is_handshaking() {
        connection.complete_io(&mut stream).unwrap();
    }
    StreamOwned::new(connection, stream)
}

fn round_trip(session: &mut StreamOwned<ClientConnection, TcpStream>, message: &[u8]) {
    session.write_all(message).unwrap();
    session.flush().unwrap();
    let mut got = vec![0u8; message.len()];
    session.read_exact(&mut got).unwrap();
    assert_same_bytes(&got, message, "the echo over TLS");
}

mod protocol {
    use super::*;

    /// Every check of the TLS echo protocol (`cargo run -- check 14 --list`).
    #[test]
    fn tls_protocol() {
        let dir = CertDir::new();
        let certs = dir.certs_arg();
        support::protocol::all_checks_pass_with_tls(
            14,
            SERVER,
            &["--cert-dir", &certs],
            Some(TlsTarget {
                ca: dir.ca(),
                server_name: "localhost".into(),
            }),
        );
    }

    /// The same checks with the certificate given (`--cert`, `--key`), checked for
    /// the IPv4 address in the certificate rather than the DNS name.
    #[test]
    fn tls_protocol_with_a_given_certificate() {
        let dir = CertDir::new();
        // A first run makes the files; the second server is given them.
        drop(start(&dir, &[]));
        let cert = dir.certs().join("server.pem").display().to_string();
        let key = dir.certs().join("server-key.pem").display().to_string();
        support::protocol::all_checks_pass_with_tls(
            14,
            SERVER,
            &["--cert", &cert, "--key", &key, "--quiet"],
            Some(TlsTarget {
                ca: dir.ca(),
                server_name: "127.0.0.1".into(),
            }),
        );
    }
}

mod lesson {
    use super::*;

    fn normaliser(port: u16, dir: &CertDir) -> Normaliser {
        Normaliser::new()
            .port(port, tls::DEFAULT_PORT)
            .pattern(&regex::escape(&dir.certs_arg()), "target/14_tls_certs")
            .pattern(r"--port \d+", "--port 10014")
            .pattern(r"local CA [0-9a-f]{8}", "local CA 5eed1e55")
            .pattern(
                r"valid from .* until .*",
                "valid from Dec  4 10:00:00 2026 +00:00 until Dec  5 10:00:00 2027 +00:00",
            )
            // A record's body is random (keys, ciphertext): only its header stays.
            .pattern(
                r"(wire . [a-z_ ]+, \d+ bytes?: (?:[0-9a-f]{2} ){4}[0-9a-f]{2})  .*",
                "$1  ..",
            )
            // The server's encrypted flight carries an ECDSA signature, 70 to 72 bytes.
            .pattern(
                r"wire < application_data, 6\d\d bytes: 17 03 03 02 [0-9a-f]{2}",
                "wire < application_data, 6xx bytes: 17 03 03 02 xx",
            )
    }

    #[test]
    fn client_and_server_transcript() {
        let dir = CertDir::new();
        let server = start(&dir, &[]);
        let port = server.port().to_string();
        let ca = dir.ca_arg();
        let client = run(
            CLIENT,
            &["--port", &port, "--ca", &ca, "hello", "world"],
            b"",
        );
        assert!(client.status.success(), "{}", client.stderr);
        let exited = server.stop(SIGINT);
        assert_clean_shutdown(&exited);
        assert!(exited.stdout.contains("(made now)"), "{}", exited.stdout);
        assert!(
            exited
                .stdout
                .contains("close_notify received, close_notify sent"),
            "{}",
            exited.stdout
        );
        transcript::check(
            "14_session",
            &normaliser(exited.listening_port(), &dir).apply(&format!(
                "# terminal 1\n$ cargo run --bin 14_tls_server\n{}\n\
                 # terminal 2\n$ cargo run --bin 14_tls_client -- --ca target/14_tls_certs/ca.pem hello world\n{}",
                exited.stdout.replace("\nshutting down", "\n^Cshutting down"),
                client.stdout
            )),
        );
    }

    #[test]
    fn show_wire_shows_records_not_plaintext() {
        let dir = CertDir::new();
        let server = start(&dir, &["--quiet"]);
        let port = server.port().to_string();
        let ca = dir.ca_arg();
        let secret = "attack at dawn";
        let client = run(
            CLIENT,
            &["--port", &port, "--ca", &ca, "--show-wire", secret],
            b"",
        );
        assert!(client.status.success(), "{}", client.stderr);
        let wire: Vec<&str> = client
            .stdout
            .lines()
            .filter(|line| line.starts_with("wire"))
            .collect();
        assert!(
            wire[0].starts_with("wire > handshake,"),
            "the ClientHello goes first: {}",
            client.stdout
        );
        assert!(
            wire.iter().any(|line| line.contains("application_data")),
            "{}",
            client.stdout
        );
        // The plaintext's bytes in hex never appear on the wire.
        let hex: Vec<String> = secret.bytes().map(|b| format!("{b:02x}")).collect();
        let secret_hex = hex[..6].join(" ");
        assert!(
            !client.stdout.contains(&secret_hex),
            "the plaintext's hex {secret_hex} is on the wire: {}",
            client.stdout
        );
        assert!(client.stdout.contains("echo: \"attack at dawn\""));
        let _ = server.stop(SIGINT);
        transcript::check(
            "14_show_wire",
            &normaliser(0, &dir).apply(&format!(
                "$ cargo run --bin 14_tls_client -- --ca target/14_tls_certs/ca.pem --show-wire \"{secret}\"\n{}",
                client.stdout
            )),
        );
    }

    #[test]
    fn certificates_are_made_once_then_reused_and_the_leaf_is_no_ca() {
        let dir = CertDir::new();
        let first = start(&dir, &[]).stop(SIGINT);
        assert!(first.stdout.contains("(made now)"), "{}", first.stdout);
        let ca_before = std::fs::read(dir.ca()).unwrap();
        let mut second = start(&dir, &[]);
        let line = second.wait_for_line(tls::CA_CERTIFICATE);
        assert!(line.ends_with("(reused)"), "{line}");
        assert!(
            second
                .wait_for_line("trust it:")
                .contains(&format!("--ca {}", dir.ca_arg())),
            "the log shows the client command with the CA"
        );
        assert_eq!(std::fs::read(dir.ca()).unwrap(), ca_before);
        drop(second);

        use x509_parser::prelude::{FromDer, X509Certificate};
        let leaf = tls::load_certificates(&dir.certs().join("server.pem")).unwrap();
        let (_, leaf) = X509Certificate::from_der(&leaf[0]).unwrap();
        assert!(
            !leaf.is_ca(),
            "the server's certificate must be an end entity"
        );
        let names = format!("{:?}", leaf.subject_alternative_name().unwrap().unwrap());
        for name in ["localhost", "127.0.0.1", "::1"] {
            let shown = match name {
                "127.0.0.1" => "[127, 0, 0, 1]".to_string(),
                "::1" => "[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]".to_string(),
                other => other.to_string(),
            };
            assert!(names.contains(&shown), "{name} missing: {names}");
        }
        let ca = tls::load_certificates(&dir.ca()).unwrap();
        let (_, ca) = X509Certificate::from_der(&ca[0]).unwrap();
        assert!(ca.is_ca());
        // The CA's private key is not kept.
        let kept: Vec<_> = std::fs::read_dir(dir.certs())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(kept.len(), 3, "{kept:?}");
    }

    #[test]
    fn wrong_ca_and_wrong_name_are_refused_and_the_server_goes_on() {
        let dir = CertDir::new();
        let other = CertDir::new();
        drop(start(&other, &[]));
        let mut server = start(&dir, &[]);
        let port = server.port().to_string();

        let untrusted = run(
            CLIENT,
            &["--port", &port, "--ca", &other.ca_arg(), "hello"],
            b"",
        );
        assert_error_line(&untrusted, &["UnknownIssuer", "--ca"]);
        let line = wait_for_word(&mut server, tls::HANDSHAKE_FAILED);
        assert!(line.contains("UnknownCA"), "{line}");

        let wrong_name = run(
            CLIENT,
            &[
                "--port",
                &port,
                "--ca",
                &dir.ca_arg(),
                "--server-name",
                "example.com",
                "hello",
            ],
            b"",
        );
        assert_error_line(&wrong_name, &["example.com", "NotValidForName"]);
        let line = wait_for_word(&mut server, tls::HANDSHAKE_FAILED);
        assert!(line.contains("BadCertificate"), "{line}");

        let good = run(
            CLIENT,
            &["--port", &port, "--ca", &dir.ca_arg(), "still here"],
            b"",
        );
        assert!(
            good.stdout.contains("echo: \"still here\""),
            "{}",
            good.stderr
        );
        assert_clean_shutdown(&server.stop(SIGINT));
    }

    /// The pitfall the chapter shows: `openssl req -x509` marks its certificate
    /// CA:TRUE, and rustls (webpki) refuses a CA as the server's own certificate.
    #[test]
    fn openssl_req_x509_certificate_is_a_ca_and_the_fix_works() {
        if !tool_available("openssl", &["version"]) {
            return;
        }
        let dir = CertDir::new();
        for (name, extra, works) in [
            ("plain", &[][..], false),
            (
                "fixed",
                &["-addext", "basicConstraints=critical,CA:FALSE"][..],
                true,
            ),
        ] {
            let cert = dir.0.join(format!("{name}.pem")).display().to_string();
            let key = dir.0.join(format!("{name}-key.pem")).display().to_string();
            let mut args = vec![
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &cert,
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
            ];
            args.extend(extra);
            let made = run("openssl", &args, b"");
            assert!(made.status.success(), "{}", made.stderr);
            let server = Server::start(SERVER, &["--cert", &cert, "--key", &key]);
            let port = server.port().to_string();
            let client = run(CLIENT, &["--port", &port, "--ca", &cert, "hi"], b"");
            if works {
                assert!(client.stdout.contains("echo: \"hi\""), "{}", client.stderr);
            } else {
                assert_error_line(&client, &["CaUsedAsEndEntity", "CA:FALSE"]);
            }
            assert_clean_shutdown(&server.stop(SIGINT));
        }
    }

    #[test]
    fn client_says_when_the_server_is_not_tls() {
        // A server that answers in plain text (lesson 12 would), and one that echoes
        // (lesson 06 would: our ClientHello comes back).
        for (reply, words) in [
            (&b"HTTP/1.1 400 Bad Request\r\n\r\n"[..], "not speaking TLS"),
            (b"", "our own ClientHello back"),
        ] {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port().to_string();
            let serving = std::thread::spawn(move || {
                let (mut stream, _) = listener.accept().unwrap();
                let mut hello = [0u8; 4096];
                let n = stream.read(&mut hello).unwrap();
                let answer = if reply.is_empty() { &hello[..n] } else { reply };
                let _ = stream.write_all(answer);
                let _ = read_until_closed(&mut stream, WAIT);
            });
            let dir = CertDir::new();
            drop(start(&dir, &[]));
            let client = run(CLIENT, &["--port", &port, "--ca", &dir.ca_arg(), "hi"], b"");
            assert_error_line(&client, &[words]);
            serving.join().unwrap();
        }
    }

    #[test]
    fn plain_tcp_garbage_is_logged_as_not_tls() {
        let dir = CertDir::new();
        let mut server = start(&dir, &[]);
        let mut plain = connect(server.addr);
        plain
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let answer = read_until_closed(&mut plain, WAIT).expect("the server closes");
        assert!(answer.is_empty(), "{}", escaped(&answer));
        let line = wait_for_word(&mut server, tls::NOT_TLS);
        assert!(line.contains("GET / HTTP/1.1\\r\\n"), "{line}");
        let mut next = session(server.addr, &dir.ca());
        round_trip(&mut next, b"served after the garbage\n");
        assert_clean_shutdown(&server.stop(SIGINT));
    }

    #[test]
    fn silent_and_stalled_handshakes_time_out() {
        let dir = CertDir::new();
        let mut server = start(&dir, &["--handshake-timeout", "0.5"]);
        let mut silent = connect(server.addr);
        // The first 5 bytes of a ClientHello's record, then nothing.
        let mut stalled = connect(server.addr);
        stalled.write_all(&[0x16, 0x03, 0x01, 0x01, 0x00]).unwrap();
        for stream in [&mut silent, &mut stalled] {
            let got = read_until_closed(stream, WAIT).expect("closed after the timeout");
            assert!(got.is_empty(), "{}", escaped(&got));
        }
        wait_for_word(&mut server, "no TLS handshake within");
        wait_for_word(&mut server, "no TLS handshake within");
        assert_clean_shutdown(&server.stop(SIGINT));
    }

    /// A client that sends one byte of its ClientHello every 100 ms never lets a
    /// single read wait long: only a deadline over the whole handshake ends it.
    #[test]
    fn a_trickling_handshake_is_closed_at_the_deadline() {
        let dir = CertDir::new();
        let mut server = start(&dir, &["--handshake-timeout", "0.5"]);
        let mut trickler = connect(server.addr);
        // A record header announcing a 512-byte ClientHello, then its body byte by byte.
        trickler.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
        let mut closed = false;
        // At most 200 bytes (20 s), 40 times the deadline.
        for _ in 0..200 {
            std::thread::sleep(std::time::Duration::from_millis(100));
            if trickler.write_all(&[0x01]).is_err() {
                closed = true;
                break;
            }
            // Has the server closed? A peek that does not wait: 0 is its FIN.
            trickler.set_nonblocking(true).unwrap();
            let seen = trickler.peek(&mut [0u8; 1]);
            trickler.set_nonblocking(false).unwrap();
            match seen {
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                Ok(0) | Err(_) => {
                    closed = true;
                    break;
                }
                Ok(_) => panic!("the server answered a ClientHello that never ended"),
            }
        }
        assert!(
            closed,
            "a client trickling one byte per 100 ms still held its handshake after 20 s \
             (--handshake-timeout 0.5)"
        );
        wait_for_word(&mut server, "no TLS handshake within");
        assert_clean_shutdown(&server.stop(SIGINT));
    }

    /// An HTTP request is longer than the 48 bytes the server peeks at: it reads the
    /// rest before closing, so the client sees a clean end (FIN), not a reset.
    #[test]
    fn a_long_plain_text_request_gets_a_clean_close_not_a_reset() {
        let dir = CertDir::new();
        let mut server = start(&dir, &[]);
        let mut plain = connect(server.addr);
        let request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:10014\r\nUser-Agent: curl/8.5.0\r\n\
                        Accept: */*\r\n\r\n";
        assert!(request.len() > 48);
        plain.write_all(request).unwrap();
        let mut rest = [0u8; 64];
        match plain.read(&mut rest) {
            Ok(0) => {}
            Ok(n) => panic!("the server answered: {}", escaped(&rest[..n])),
            Err(err) => panic!("want a clean close (EOF), got: {err}"),
        }
        let line = wait_for_word(&mut server, tls::NOT_TLS);
        // The log shows the first bytes and marks the cut.
        assert!(line.contains("GET / HTTP/1.1\\r\\n"), "{line}");
        assert!(line.contains("..."), "the cut is not marked: {line}");
        assert_clean_shutdown(&server.stop(SIGINT));
    }

    /// A TLS server (the test's) that finishes the handshake, then echoes nothing
    /// (`echo: false`) or echoes but never answers close_notify (`echo: true`).
    fn stalling_tls_server(dir: &CertDir, echo: bool) -> (u16, std::thread::JoinHandle<()>) {
        let chain = tls::load_certificates(&dir.certs().join("server.pem")).unwrap();
        let key = tls::load_private_key(&dir.certs().join("server-key.pem")).unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let serving = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(WAIT)).unwrap();
            let mut tls = rustls::ServerConnection::new(Arc::new(config)).unwrap();
            while tls.is_handshaking() {
                tls.complete_io(&mut stream).unwrap();
            }
            if echo {
                let mut session = rustls::Stream::new(&mut tls, &mut stream);
                let mut line = [0u8; 3];
                session.read_exact(&mut line).unwrap();
                session.write_all(&line).unwrap();
                session.flush().unwrap();
            }
            let _ = read_until_closed(&mut stream, WAIT);
        });
        (port, serving)
    }

    #[test]
    fn client_says_what_timed_out_when_the_server_stalls() {
        let dir = CertDir::new();
        drop(start(&dir, &[]));
        let ca = dir.ca_arg();
        std::thread::scope(|scope| {
            for (echo, words) in [
                (false, "did not echo within 10 s"),
                (true, "did not answer our close_notify within 10 s"),
            ] {
                let (port, serving) = stalling_tls_server(&dir, echo);
                let ca = &ca;
                scope.spawn(move || {
                    let port = port.to_string();
                    let client = run(CLIENT, &["--port", &port, "--ca", ca, "hi"], b"");
                    assert_error_line(&client, &[words]);
                    assert!(!client.stderr.contains("os error"), "{}", client.stderr);
                    serving.join().unwrap();
                });
            }
        });
    }

    /// Ctrl-C on the server while the client waits for input, then the input ends:
    /// the client says the server ended the session, not that it closed normally.
    #[test]
    fn client_reports_a_server_ended_session_found_at_the_end_of_input() {
        let dir = CertDir::new();
        let server = start(&dir, &[]);
        let port = server.port().to_string();
        let ca = dir.ca_arg();
        let mut client = Interactive::start(CLIENT, &["--port", &port, "--ca", &ca]);
        assert!(client.expect_line().starts_with("TLS: TLSv1_3"));
        client.expect_line();
        client.send_line("before");
        assert_eq!(client.expect_line(), "echo: \"before\"");
        assert_clean_shutdown(&server.stop(SIGINT));
        let exited = client.finish();
        assert!(
            exited
                .stdout
                .contains("the server ended the session (close_notify)"),
            "{}",
            exited.stdout
        );
    }

    /// A certificate folder from long ago: the server refuses an expired
    /// certificate and says to remove the folder, rather than serve it "(reused)".
    #[test]
    fn an_expired_certificate_is_not_reused() {
        use rcgen::{CertificateParams, KeyPair};
        let dir = CertDir::new();
        let certs = dir.certs();
        std::fs::create_dir_all(&certs).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(400);
        params.not_after = now - time::Duration::days(35);
        let expired = params.self_signed(&key).unwrap();
        std::fs::write(certs.join("ca.pem"), expired.pem()).unwrap();
        std::fs::write(certs.join("server.pem"), expired.pem()).unwrap();
        std::fs::write(certs.join("server-key.pem"), key.serialize_pem()).unwrap();
        let certs_arg = dir.certs_arg();
        let exited = run(SERVER, &["--cert-dir", &certs_arg, "--port", "0"], b"");
        assert_error_line(&exited, &["expired", &certs_arg, "remove"]);
    }

    #[test]
    fn a_session_without_close_notify_is_logged_as_truncated() {
        let dir = CertDir::new();
        let mut server = start(&dir, &[]);
        let mut cut = session(server.addr, &dir.ca());
        round_trip(&mut cut, b"and then the line went dead\n");
        drop(cut);
        let line = wait_for_word(&mut server, tls::TRUNCATED);
        assert!(line.contains("without close_notify"), "{line}");
        assert_clean_shutdown(&server.stop(SIGINT));
    }

    #[test]
    fn a_long_line_from_stdin_comes_back_whole() {
        let dir = CertDir::new();
        let server = start(&dir, &["--quiet"]);
        let port = server.port().to_string();
        let mut line = vec![b'z'; 300_000];
        line.push(b'\n');
        let client = run(CLIENT, &["--port", &port, "--ca", &dir.ca_arg()], &line);
        assert!(client.status.success(), "{}", client.stderr);
        assert!(client.stdout.contains("echo: \"zzzz"), "{}", client.stdout);
        assert!(
            client.stdout.contains("(299936 more bytes)"),
            "{}",
            client.stdout
        );
        drop(server);
    }

    /// Ctrl-C on the server while the client waits for its next line: the server
    /// says goodbye with close_notify, and the client says so in one line.
    #[test]
    fn client_sees_the_server_end_the_session() {
        let dir = CertDir::new();
        let server = start(&dir, &[]);
        let port = server.port().to_string();
        let ca = dir.ca_arg();
        let mut client = Interactive::start(CLIENT, &["--port", &port, "--ca", &ca]);
        assert!(client.expect_line().starts_with("TLS: TLSv1_3"));
        assert!(
            client
                .expect_line()
                .starts_with("certificate: CN=localhost")
        );
        client.send_line("before");
        assert_eq!(client.expect_line(), "echo: \"before\"");
        assert_clean_shutdown(&server.stop(SIGINT));
        client.send_line("after");
        let exited = client.finish();
        assert_error_line(&exited, &["ended the session (close_notify)"]);
    }

    #[test]
    fn fifty_clients_at_once() {
        let dir = CertDir::new();
        let server = start(&dir, &["--quiet"]);
        let ca = dir.ca();
        let mut sessions: Vec<_> = (0..50).map(|_| session(server.addr, &ca)).collect();
        for (index, session) in sessions.iter_mut().enumerate() {
            session
                .write_all(format!("client {index}\n").as_bytes())
                .unwrap();
            session.flush().unwrap();
        }
        for (index, session) in sessions.iter_mut().enumerate() {
            let want = format!("client {index}\n");
            let mut got = vec![0u8; want.len()];
            session.read_exact(&mut got).unwrap();
            assert_same_bytes(&got, want.as_bytes(), "one of 50 echoes");
        }
        assert_clean_shutdown(&server.stop(SIGINT));
    }

    #[test]
    fn python_ssl_client() {
        if !tool_available("python3", &["--version"]) {
            return;
        }
        let dir = CertDir::new();
        let mut server = start(&dir, &[]);
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/tls_echo_client.py"
        );
        let port = server.port().to_string();
        let exited = run("python3", &[script, &port, &dir.ca_arg()], b"");
        assert!(exited.status.success(), "{}", exited.stderr);
        for line in [
            "version: TLSv1.3",
            "subject: localhost",
            "echo: 'hello from Python\\n'",
            "closed with close_notify",
        ] {
            assert!(exited.stdout.contains(line), "{line:?}:\n{}", exited.stdout);
        }
        wait_for_word(&mut server, "close_notify received, close_notify sent");
        let refused = run(
            "python3",
            &[script, &port, &dir.ca_arg(), "example.com"],
            b"",
        );
        assert!(
            refused.stdout.contains("refused: Hostname mismatch"),
            "{}{}",
            refused.stdout,
            refused.stderr
        );
        assert_clean_shutdown(&server.stop(SIGINT));
    }

    #[test]
    fn openssl_s_client_verifies_and_is_echoed() {
        if !tool_available("openssl", &["version"]) {
            return;
        }
        let dir = CertDir::new();
        let other = CertDir::new();
        drop(start(&other, &[]));
        let mut server = start(&dir, &[]);
        let connect_to = format!("127.0.0.1:{}", server.port());
        let s_client = |ca: &str| {
            run(
                "openssl",
                &[
                    "s_client",
                    "-connect",
                    &connect_to,
                    "-CAfile",
                    ca,
                    "-servername",
                    "localhost",
                    "-verify_return_error",
                    "-verify_hostname",
                    "localhost",
                ],
                b"from openssl\n",
            )
        };
        let good = s_client(&dir.ca_arg());
        assert!(good.status.success(), "{}{}", good.stdout, good.stderr);
        assert!(
            good.stdout.contains("Verify return code: 0 (ok)"),
            "{}",
            good.stdout
        );
        let line = wait_for_word(&mut server, log::RECEIVED);
        assert!(line.contains("from openssl"), "{line}");
        let bad = s_client(&other.ca_arg());
        assert!(!bad.status.success(), "{}", bad.stdout);
        assert!(
            format!("{}{}", bad.stdout, bad.stderr).contains("unable to get local issuer"),
            "{}{}",
            bad.stdout,
            bad.stderr
        );
        assert_clean_shutdown(&server.stop(SIGINT));
    }

    #[test]
    fn sigint_with_clients_connected() {
        let dir = CertDir::new();
        let mut server = start(&dir, &[]);
        // One mid-handshake (never sent a byte), one idle in a session, one that
        // sends without reading (its thread ends up blocked in write).
        let _silent = connect(server.addr);
        let mut idle = session(server.addr, &dir.ca());
        round_trip(&mut idle, b"then idle\n");
        let mut flooder = session(server.addr, &dir.ca());
        let flooding = std::thread::spawn(move || {
            let chunk = vec![b'f'; 1 << 16];
            for _ in 0..512 {
                if flooder.write_all(&chunk).is_err() {
                    break;
                }
            }
        });
        wait_for_word(&mut server, log::RECEIVED);
        server.wait_for_line("conn-3");
        let exited = server.stop(SIGINT);
        assert_clean_shutdown(&exited);
        assert!(
            exited.stdout.contains("all threads joined"),
            "{}",
            exited.stdout
        );
        // The idle session is told goodbye properly: close_notify, then EOF.
        let mut rest = [0u8; 16];
        assert_eq!(idle.read(&mut rest).unwrap(), 0);
        flooding.join().unwrap();
    }

    #[test]
    fn contract_server() {
        let dir = CertDir::new();
        let certs = dir.certs_arg();
        let args = ["--cert-dir", certs.as_str()];
        contract::server_reports_port_in_use(SERVER, &args);
        contract::server_reports_bad_host(SERVER);
        contract::rejects_bad_flags(SERVER);
        assert_usage_error(&run(SERVER, &["--cert", "x.pem"], b""));
        assert_usage_error(&run(SERVER, &["--handshake-timeout", "0"], b""));
        let missing = run(
            SERVER,
            &["--cert", "/no/such.pem", "--key", "/no/key.pem"],
            b"",
        );
        assert_error_line(&missing, &["/no/such.pem"]);
        contract::server_stops_on(SERVER, &args, SIGINT);
        contract::server_stops_on(SERVER, &["--cert-dir", &certs, "--quiet"], SIGTERM);
    }

    #[test]
    fn contract_client() {
        let dir = CertDir::new();
        drop(start(&dir, &[]));
        let ca = dir.ca_arg();
        contract::rejects_bad_flags(CLIENT);
        contract::client_reports_no_server(CLIENT, "14_tls_server", &["--ca", &ca]);
        let no_ca = run(CLIENT, &["--ca", "/no/such/ca.pem", "hi"], b"");
        assert_error_line(&no_ca, &["/no/such/ca.pem", "14_tls_server"]);
    }

    /// Enough TLS round trips to log more than a pipe holds (64 KiB).
    fn busy_over_tls(ca: PathBuf) -> impl FnOnce(SocketAddr) {
        move |addr| {
            let mut session = session(addr, &ca);
            for round in 0..1200 {
                round_trip(
                    &mut session,
                    format!("{round:05} {}\n", "x".repeat(60)).as_bytes(),
                );
            }
        }
    }

    #[test]
    fn serves_and_stops_with_stdout_closed() {
        let dir = CertDir::new();
        drop(start(&dir, &[]));
        let certs = dir.certs_arg();
        contract::survives_closed_stdout(SERVER, &["--cert-dir", &certs], busy_over_tls(dir.ca()));
    }

    #[test]
    fn serves_and_stops_with_stdout_stalled() {
        let dir = CertDir::new();
        drop(start(&dir, &[]));
        let certs = dir.certs_arg();
        contract::survives_stalled_stdout(SERVER, &["--cert-dir", &certs], busy_over_tls(dir.ca()));
    }

    /// Lesson 11's load client with `--tls CA`: every echo checked, over kept sessions
    /// and with a handshake per request; a CA that did not sign the server's
    /// certificate makes every request fail.
    #[test]
    fn load_client_over_tls() {
        const LOAD: &str = env!("CARGO_BIN_EXE_11_load_test_client");
        let dir = CertDir::new();
        let other = CertDir::new();
        drop(start(&other, &[]));
        let server = start(&dir, &["--quiet"]);
        let port = server.port().to_string();
        let ca = dir.ca_arg();
        for more in [&["--size", "40000"][..], &["--new-connection-per-request"]] {
            let mut args = vec!["--port", &port, "--tls", &ca, "--conns", "3"];
            args.extend(["--requests", "20"]);
            args.extend(more);
            let exited = run(LOAD, &args, b"");
            assert!(
                exited.status.success() && exited.stdout.contains("errors: 0"),
                "{args:?}: {}{}",
                exited.stdout,
                exited.stderr
            );
            assert!(exited.stdout.contains("over TLS"), "{}", exited.stdout);
        }
        let untrusted = run(
            LOAD,
            &["--port", &port, "--tls", &other.ca_arg(), "--requests", "2"],
            b"",
        );
        assert!(!untrusted.status.success(), "{}", untrusted.stdout);
        assert!(
            untrusted.stdout.contains("UnknownIssuer"),
            "{}",
            untrusted.stdout
        );
        assert_clean_shutdown(&server.stop(SIGINT));
    }

    /// The same client's plain counterpart for the table: a new TCP connection per
    /// echo, against lesson 06's server (the same server without TLS).
    /// Lesson 11's load client makes full handshakes by default (what the chapter's
    /// handshakes/s row measures), and resumed ones with --tls-resume; the server's
    /// log says which each was.
    #[test]
    fn load_client_full_and_resumed_handshakes() {
        const LOAD: &str = env!("CARGO_BIN_EXE_11_load_test_client");
        let dir = CertDir::new();
        let mut server = start(&dir, &[]);
        let port = server.port().to_string();
        let ca = dir.ca_arg();
        for (more, full, resumed) in [(&[][..], 4, 0), (&["--tls-resume"][..], 1, 3)] {
            let mut args = vec!["--port", &port, "--tls", &ca, "--conns", "1"];
            args.extend(["--requests", "4", "--new-connection-per-request"]);
            args.extend(more);
            let exited = run(LOAD, &args, b"");
            assert!(
                exited.status.success() && exited.stdout.contains("errors: 0"),
                "{args:?}: {}{}",
                exited.stdout,
                exited.stderr
            );
            let kinds: Vec<String> = (0..4)
                .map(|_| wait_for_word(&mut server, tls::HANDSHAKE_DONE))
                .collect();
            let count = |kind: &str| kinds.iter().filter(|line| line.ends_with(kind)).count();
            assert_eq!(
                (count("full handshake"), count("resumed session")),
                (full, resumed),
                "{args:?}:\n{}",
                kinds.join("\n")
            );
        }
        assert_clean_shutdown(&server.stop(SIGINT));
    }

    #[test]
    fn load_client_new_connection_per_echo_without_tls() {
        const LOAD: &str = env!("CARGO_BIN_EXE_11_load_test_client");
        const PLAIN: &str = env!("CARGO_BIN_EXE_06_threaded_server");
        let server = Server::start(PLAIN, &["--quiet"]);
        let port = server.port().to_string();
        let exited = run(
            LOAD,
            &[
                "--port",
                &port,
                "--new-connection-per-request",
                "--conns",
                "3",
                "--requests",
                "20",
            ],
            b"",
        );
        assert!(
            exited.status.success() && exited.stdout.contains("errors: 0"),
            "{}{}",
            exited.stdout,
            exited.stderr
        );
        assert!(
            exited.stdout.contains("a new connection per request"),
            "{}",
            exited.stdout
        );
        assert!(
            exited.stdout.contains("summary requests=60 "),
            "{}",
            exited.stdout
        );
        assert_clean_shutdown(&server.stop(SIGINT));
    }
}

/// The chapter's exercises: each fails on the lesson as shipped and passes once the
/// exercise is done (the reference solutions are in exercises/14_tls/).
mod exercises {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::{ClientConfig, RootCertStore};

    /// A CA for clients (written to `dir`), and a client certificate it signed.
    fn client_identity(dir: &Path) -> (PathBuf, CertificateDer<'static>, PrivateKeyDer<'static>) {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(DnType::CommonName, "lesson 14 test client CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let ca_key = KeyPair::generate().unwrap();
        let ca_certificate = ca.self_signed(&ca_key).unwrap();
        let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
        client
            .distinguished_name
            .push(DnType::CommonName, "a learner's client");
        client.is_ca = IsCa::ExplicitNoCa;
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate().unwrap();
        let client_certificate = client
            .signed_by(&client_key, &Issuer::new(ca, ca_key))
            .unwrap();
        let ca_path = dir.join("client-ca.pem");
        std::fs::write(&ca_path, ca_certificate.pem()).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(client_key.serialize_der()));
        (ca_path, client_certificate.der().clone(), key)
    }

    fn roots(ca: &Path) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        for certificate in tls::load_certificates(ca).unwrap() {
            roots.add(certificate).unwrap();
        }
        roots
    }

    /// Handshake and one echo with `config`; the error, if any, as text.
    fn try_echo(addr: SocketAddr, config: ClientConfig) -> Result<(), String> {
        let name = tls::server_name("localhost").unwrap();
        let mut connection = ClientConnection::new(Arc::new(config), name).unwrap();
        let mut stream = connect(addr);
        stream.set_read_timeout(Some(WAIT)).unwrap();
        while connection.is_handshaking() {
            connection
                .complete_io(&mut stream)
                .map_err(|err| err.to_string())?;
        }
        let mut session = StreamOwned::new(connection, stream);
        let message = b"who is asking?\n";
        session
            .write_all(message)
            .and_then(|()| session.flush())
            .map_err(|err| err.to_string())?;
        let mut got = vec![0u8; message.len()];
        // TLS 1.3: the server checks our certificate after our side of the handshake
        // is done, so a refusal shows here, as an alert instead of the echo.
        session
            .read_exact(&mut got)
            .map_err(|err| err.to_string())?;
        assert_same_bytes(&got, message, "the echo");
        Ok(())
    }

    /// 14.1: `--client-ca FILE` makes the server ask for a client certificate and
    /// refuse a client without one signed by that CA (mutual TLS).
    #[test]
    #[ignore]
    fn exercise_1_mutual_tls_requires_a_client_certificate() {
        let dir = CertDir::new();
        let (client_ca, chain, key) = client_identity(&dir.0);
        let client_ca_arg = client_ca.display().to_string();
        let mut server = start(&dir, &["--client-ca", &client_ca_arg]);

        let anonymous = ClientConfig::builder()
            .with_root_certificates(roots(&dir.ca()))
            .with_no_client_auth();
        let refused = try_echo(server.addr, anonymous);
        assert!(
            refused.is_err(),
            "a client without a certificate was served"
        );
        let line = wait_for_word(&mut server, tls::HANDSHAKE_FAILED);
        assert!(line.contains("certificate"), "{line}");

        // A certificate from a CA the server does not trust for clients: refused too.
        let stranger = CertDir::new();
        let (_, strange_chain, strange_key) = client_identity(&stranger.0);
        let strange = ClientConfig::builder()
            .with_root_certificates(roots(&dir.ca()))
            .with_client_auth_cert(vec![strange_chain], strange_key)
            .unwrap();
        assert!(
            try_echo(server.addr, strange).is_err(),
            "a client certificate from an unknown CA was accepted"
        );

        let known = ClientConfig::builder()
            .with_root_certificates(roots(&dir.ca()))
            .with_client_auth_cert(vec![chain], key)
            .unwrap();
        try_echo(server.addr, known).unwrap_or_else(|why| {
            panic!(
                "a client with a certificate the CA signed was refused: {why}\n{}",
                server.last_lines()
            )
        });
        assert_clean_shutdown(&server.stop(SIGINT));
    }

    /// 14.2: `--tls13-only` refuses a client that offers only TLS 1.2.
    #[test]
    #[ignore]
    fn exercise_2_tls13_only_refuses_tls12() {
        let dir = CertDir::new();
        let mut server = start(&dir, &["--tls13-only"]);
        let tls12 = ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
            .with_root_certificates(roots(&dir.ca()))
            .with_no_client_auth();
        assert!(
            try_echo(server.addr, tls12).is_err(),
            "a TLS 1.2 client was served with --tls13-only"
        );
        wait_for_word(&mut server, tls::HANDSHAKE_FAILED);
        let tls13 = ClientConfig::builder()
            .with_root_certificates(roots(&dir.ca()))
            .with_no_client_auth();
        try_echo(server.addr, tls13).unwrap();
        assert_clean_shutdown(&server.stop(SIGINT));
    }
}
