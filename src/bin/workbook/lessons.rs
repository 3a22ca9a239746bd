//! What the front door knows of each lesson, beside its folder under `lessons/`.

/// One lesson of the workbook.
pub struct Lesson {
    pub number: u32,
    /// The folder name under `lessons/`, e.g. `05_poll`.
    pub name: &'static str,
    pub topic: &'static str,
    /// Transport and default port, as the README's protocol table says.
    pub transport: &'static str,
    /// The protocol in a line.
    pub protocol: &'static str,
    /// What `run NN` gives the client when the user gives nothing.
    pub client_args: &'static [&'static str],
    /// Why `run NN` cannot run this lesson as a pair, if it cannot.
    pub not_a_pair: Option<&'static str>,
}

pub static LESSONS: &[Lesson] = &[
    Lesson {
        number: 1,
        name: "01_tcp_basics",
        topic: "TCP basics: the four server steps, one client at a time",
        transport: "TCP 21567",
        protocol: "each chunk comes back as `[<ctime>] <chunk>`",
        client_args: &["hello", "world"],
        not_a_pair: None,
    },
    Lesson {
        number: 2,
        name: "02_socket_options",
        topic: "socket options: SO_REUSEADDR, TIME_WAIT, TCP_NODELAY, buffers, half-close",
        transport: "TCP 12345",
        protocol: "each chunk echoed + `\\nI get it!\\n`; closes after the client's half-close",
        client_args: &["hello"],
        not_a_pair: None,
    },
    Lesson {
        number: 3,
        name: "03_udp_time",
        topic: "UDP time: datagrams, byte order, lost packets and retries",
        transport: "UDP 12345",
        protocol: "any datagram gets 4 bytes: the Unix time, u32 big-endian",
        client_args: &[],
        not_a_pair: None,
    },
    Lesson {
        number: 4,
        name: "04_select",
        topic: "select: one thread, many clients, FD_SETSIZE",
        transport: "TCP 10001",
        protocol: "echo",
        client_args: &["--conns", "3", "hello"],
        not_a_pair: None,
    },
    Lesson {
        number: 5,
        name: "05_poll",
        topic: "poll: one thread, many clients, non-blocking sockets, output buffers",
        transport: "TCP 8009",
        protocol: "echo",
        client_args: &["--conns", "3", "hello"],
        not_a_pair: None,
    },
    Lesson {
        number: 6,
        name: "06_threaded",
        topic: "threaded: a thread per connection, bounded, joined on Ctrl-C",
        transport: "TCP 8080",
        protocol: "echo",
        client_args: &["--conns", "2", "hello"],
        not_a_pair: None,
    },
    Lesson {
        number: 7,
        name: "07_fixed_threads",
        topic: "fixed threads: a pool of workers sharing one listening socket",
        transport: "TCP 8081",
        protocol: "echo",
        client_args: &["--conns", "5"],
        not_a_pair: None,
    },
    Lesson {
        number: 8,
        name: "08_event_loop",
        topic: "event loop: a small reactor on epoll, level- and edge-triggered",
        transport: "TCP 10008",
        protocol: "echo",
        client_args: &["--conns", "3", "hello"],
        not_a_pair: None,
    },
    Lesson {
        number: 9,
        name: "09_framing",
        topic: "framing: messages on a byte stream, asynchat on the 08 loop",
        transport: "TCP 10009",
        protocol: "a header block ending `\\r\\n\\r\\n` gets `<ctime>\\r\\n`, then close",
        client_args: &["--chunk", "4"],
        not_a_pair: None,
    },
    Lesson {
        number: 10,
        name: "10_socketserver",
        topic: "socketserver: a Handler trait, sync/threading/forking, TCP and UDP",
        transport: "TCP 10010 (UDP with --udp)",
        protocol: "each `\\r\\n` gets `<ctime>\\r\\n`; UDP: `[<ctime>] <datagram>`",
        client_args: &["hello"],
        not_a_pair: None,
    },
    Lesson {
        number: 11,
        name: "11_load_test",
        topic: "load test: every server model measured under the same loads",
        transport: "(a runner)",
        protocol: "none: it measures the other lessons' servers",
        client_args: &[],
        not_a_pair: Some(
            "lesson 11's \"server\" is the load runner, not a server: run it with \
             `cargo run --release --bin 11_load_test_server` (about ten minutes), or its \
             client against a running lesson: `cargo run --release --bin 11_load_test_client -- --port 10008`",
        ),
    },
    Lesson {
        number: 12,
        name: "12_http",
        topic: "HTTP: a web page from a raw socket, keep-alive, limits, tested in a real browser",
        transport: "TCP 10012",
        protocol: "HTTP/1.1: GET / shows your request, /hello, HEAD, keep-alive (open it in a browser)",
        client_args: &["/hello", "/"],
        not_a_pair: None,
    },
    Lesson {
        number: 13,
        name: "13_chat",
        topic: "chat: a room for many clients, slow readers dropped, commands looked up in a table",
        transport: "TCP 10013",
        protocol: "UTF-8 lines: a name first, then `<NAME> text` to the others, /who /msg /me /nick /quit /help",
        client_args: &["--name", "ada", "hello", "/who", "/help"],
        not_a_pair: None,
    },
    Lesson {
        number: 14,
        name: "14_tls",
        topic: "TLS: the echo over rustls, a local CA, verification, close_notify",
        transport: "TCP 10014",
        protocol: "TLS 1.3/1.2 (the server's certificate signed by its local CA), then echo",
        client_args: &["hello", "world"],
        not_a_pair: None,
    },
    Lesson {
        number: 15,
        name: "15_names",
        topic: "names: getaddrinfo, byte order, IPv6 and one dual-stack socket for IPv4 too",
        transport: "TCP 10015 (IPv6 ::, dual stack)",
        protocol: "a greeting line (`hello ADDRESS port PORT: ...`), then echo",
        client_args: &["connect", "localhost", "hello"],
        not_a_pair: None,
    },
    Lesson {
        number: 16,
        name: "16_local",
        topic: "local sockets: AF_UNIX, permissions, peer credentials, socketpair and fork, passing descriptors",
        transport: "AF_UNIX path (UDP 10000 with --udp)",
        protocol: "echo; datagrams (--dgram, --udp) get `echo:` + datagram; a passed fd gets an `fd:` line",
        client_args: &["hello", "local"],
        not_a_pair: None,
    },
    Lesson {
        number: 17,
        name: "17_failures",
        topic: "failures: every socket error on purpose, named (ErrorKind, errno, Python) and fixed",
        transport: "TCP 10017",
        protocol: "`ready\\n` then echo; --misbehave MODE: never-accept, reset, close, silent, slow, no-read, wait-first",
        client_args: &["hello"],
        not_a_pair: None,
    },
    Lesson {
        number: 18,
        name: "18_async",
        topic: "async: the echo on tokio (a task per connection, two runtimes) and on mio",
        transport: "TCP 10018",
        protocol: "any bytes, echoed unchanged",
        client_args: &["--conns", "2", "hello", "async"],
        not_a_pair: None,
    },
    Lesson {
        number: 19,
        name: "19_uring",
        topic: "io_uring: completions instead of readiness, multishot accept, a provided buffer ring",
        transport: "TCP 10019",
        protocol: "echo",
        client_args: &["--conns", "3", "hello"],
        not_a_pair: None,
    },
];

/// The lesson with this number, from `05`, `5` or `05_poll`.
pub fn find(text: &str) -> Option<&'static Lesson> {
    let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
    let number: u32 = digits.parse().ok()?;
    LESSONS.iter().find(|lesson| lesson.number == number)
}
