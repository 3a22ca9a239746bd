//! Lesson 10, the server: the socketserver tutorial's time server, on a small framework.
//!
//! The handler below is the tutorial's: log every chunk a client sends, and answer
//! each `\r\n` in it with the server's time, ctime style, and `\r\n`. The framework
//! (framework.rs and the files in framework/, a Rust version of Python's
//! `socketserver`) does the rest: the sockets, the serving loop, and running each
//! request on the serving thread (`--mode sync`), on a thread of its own (`threading`)
//! or in a child process (`forking`). With `--udp` it serves datagrams: each gets
//! `[<ctime>] <datagram>` back, cut to fit in one datagram if need be.
//!
//!   terminal 1: cargo run --bin 10_socketserver_server -- --mode threading
//!   terminal 2: cargo run --bin 10_socketserver_client -- hello

mod cidr;
mod framework;
mod log_words;

use std::io::{self, BufRead, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use cidr::parse_networks;
use framework::{
    BaseServer, Concurrency, DatagramRequest, Forking, Handler, ServerOptions, StreamRequest,
    Synchronous, TcpServer, Threading, UdpServer, log_line,
};
use workbook::cli::{Args, Cli};
use workbook::{exit_with_error, log, show, signal, time};

const DEFAULT_PORT: u16 = 10010;
const DEFAULT_MAX_THREADS: usize = 64;
const DEFAULT_MAX_CHILDREN: usize = 40;

// ANCHOR: handler
/// The tutorial's handler; the framework makes one for every request. It logs with
/// the framework's `log_line`, which works in a forked child too.
struct TimeHandler {
    quiet: bool,
    /// Both ends of the connection, for the log (filled in by `setup`).
    peers: String,
    /// The previous chunk ended with `\r`: a `\n` first in this one ends a line.
    after_cr: bool,
    /// The reply, `<ctime>\r\n`, and the second it shows. Formatting a date is most
    /// of this server's work per reply (lesson 11 measures it), and it changes once a
    /// second: so it is made once a second, as busy servers (nginx) do with theirs.
    reply: String,
    reply_second: Option<u64>,
}

impl TimeHandler {
    fn refresh_reply(&mut self) {
        let now = SystemTime::now();
        let second = time::unix_seconds(now);
        if self.reply_second != Some(second) {
            self.reply = format!("{}\r\n", time::ctime(now));
            self.reply_second = Some(second);
        }
    }
}

impl Handler<StreamRequest> for TimeHandler {
    fn setup(&mut self, request: &mut StreamRequest) -> io::Result<()> {
        self.peers = request.peers().to_string();
        Ok(())
    }

    fn handle(&mut self, request: &mut StreamRequest) -> io::Result<()> {
        loop {
            // fill_buf returns what the buffer holds or, when it is empty, what one
            // recv(2) brings: a chunk, cut wherever TCP cut the stream.
            let chunk = match request.rfile.fill_buf() {
                Ok(chunk) => chunk,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            // Nothing, not even a wait: the client closed its side (EOF). Done.
            if chunk.is_empty() {
                return Ok(());
            }
            let size = chunk.len();
            if !self.quiet {
                let shown = show::bytes(chunk);
                let bytes = show::count(size, "byte");
                log_line(format!(
                    "{} {bytes} from {}: {shown}",
                    log::RECEIVED,
                    self.peers
                ));
            }
            let line_ends = count_line_ends(chunk, &mut self.after_cr);
            request.rfile.consume(size);
            for _ in 0..line_ends {
                self.refresh_reply();
                request.wfile.write_all(self.reply.as_bytes())?;
                if !self.quiet {
                    let shown = show::bytes(self.reply.as_bytes());
                    log_line(format!("{} to {}: {shown}", log_words::REPLIED, self.peers));
                }
            }
            // wfile is buffered: send the replies now, the client is waiting for them.
            request.wfile.flush()?;
        }
    }
}
// ANCHOR_END: handler

// ANCHOR: datagram_handler
/// The same handler for UDP: the request type picks the implementation.
impl Handler<DatagramRequest> for TimeHandler {
    fn handle(&mut self, request: &mut DatagramRequest) -> io::Result<()> {
        let sender = request.client_address();
        let data = request.data();
        if !self.quiet {
            let bytes = show::count(data.len(), "byte");
            log_line(format!(
                "{} {bytes} from {sender}: {}",
                log::RECEIVED,
                show::bytes(data)
            ));
        }
        let mut reply = format!("[{}] ", time::ctime_now()).into_bytes();
        // The reply is 27 bytes longer than the datagram, and a datagram has a largest
        // size (65,507 bytes over IPv4): echo what fits, and say what was left out.
        let room = request.max_reply_size().saturating_sub(reply.len());
        let echoed = &data[..data.len().min(room)];
        if echoed.len() < data.len() && !self.quiet {
            let left_out = show::count(data.len() - echoed.len(), "byte");
            log_line(format!(
                "{} the reply to {sender} to {} bytes, the largest datagram: \
                 the datagram's last {left_out} left out",
                log_words::TRUNCATED,
                request.max_reply_size()
            ));
        }
        reply.extend_from_slice(echoed);
        request.reply(&reply)?;
        if !self.quiet {
            log_line(format!(
                "{} to {sender}: {}",
                log_words::REPLIED,
                show::bytes(&reply)
            ));
        }
        Ok(())
    }
}
// ANCHOR_END: datagram_handler

/// How many `\r\n` end in `chunk`, counting one whose `\r` ended the previous chunk.
fn count_line_ends(chunk: &[u8], after_cr: &mut bool) -> usize {
    let Some(&last) = chunk.last() else {
        return 0;
    };
    // One `\r\n` may straddle the previous chunk and this one.
    let straddling = usize::from(*after_cr && chunk[0] == b'\n');
    *after_cr = last == b'\r';
    straddling + chunk.windows(2).filter(|pair| *pair == b"\r\n").count()
}

fn main() {
    let args = Cli::new(
        "10_socketserver_server",
        "Lesson 10: the socketserver tutorial's time server. Each \\r\\n a client sends is \
         answered with the server's time and \\r\\n; with --udp, each datagram is answered \
         with `[<ctime>] <datagram>`.",
        DEFAULT_PORT,
    )
    .value(
        "--mode",
        "MODE",
        "sync (one request at a time), threading (a thread per request) or forking \
         (a child process per request); default sync",
    )
    .switch("--udp", "serve UDP datagrams instead of TCP connections")
    .value(
        "--max-threads",
        "N",
        "threading: at most N requests at once, the next ones wait (default 64)",
    )
    .value(
        "--max-children",
        "N",
        "forking: at most N child processes at once, the next ones wait (default 40)",
    )
    .value(
        "--request-queue-size",
        "N",
        "TCP: the backlog passed to listen(2) (default 5, as in Python)",
    )
    .value(
        "--allow",
        "CIDRS",
        "serve only clients from these networks, e.g. 127.0.0.0/8 or 10.0.0.0/8,::1 \
         (verify_request); others are logged and closed",
    )
    .switch("--quiet", "log only errors and the start and stop lines")
    .parse();
    let quiet = args.flag("--quiet");
    let udp = args.flag("--udp");

    // ANCHOR: choose
    let mode: String = args.get_or("--mode", "sync".to_string());
    let concurrency: Box<dyn Concurrency> = match mode.as_str() {
        "sync" => Box::new(Synchronous),
        "threading" => Box::new(Threading::new(bound(
            &args,
            "--max-threads",
            DEFAULT_MAX_THREADS,
        ))),
        "forking" => Box::new(Forking::new(bound(
            &args,
            "--max-children",
            DEFAULT_MAX_CHILDREN,
        ))),
        other => args.usage_error(&format!(
            "--mode must be sync, threading or forking, not '{other}'"
        )),
    };
    // ANCHOR_END: choose
    for (flag, needs) in [
        ("--max-threads", "threading"),
        ("--max-children", "forking"),
    ] {
        if mode != needs && args.try_get::<String>(flag).is_ok_and(|v| v.is_some()) {
            args.usage_error(&format!("{flag} needs --mode {needs}"));
        }
    }
    let queue: Option<u16> = args.get("--request-queue-size");
    if udp && queue.is_some() {
        args.usage_error("--request-queue-size is for TCP: UDP has no listen(2)");
    }
    let allow: Option<String> = args.get("--allow");
    let networks = allow
        .as_deref()
        .map(|text| parse_networks(text).unwrap_or_else(|message| args.usage_error(&message)));
    let addr = args
        .socket_addr()
        .unwrap_or_else(|message| exit_with_error(&message));

    // ANCHOR: options
    let mut options = ServerOptions {
        // SO_REUSEADDR for TCP, as every lesson since 01; not for UDP (lesson 03).
        allow_reuse_address: !udp,
        request_queue_size: queue.map_or(5, i32::from),
        quiet,
        ..ServerOptions::default()
    };
    if let (Some(networks), Some(text)) = (networks, allow.clone()) {
        options.verify_request = Arc::new(move |client: SocketAddr| {
            if networks.iter().any(|network| network.contains(client.ip())) {
                Ok(())
            } else {
                Err(format!("not in --allow {text}"))
            }
        });
    }
    let handler = move || TimeHandler {
        quiet,
        peers: String::new(),
        after_cr: false,
        reply: String::new(),
        reply_second: None,
    };
    if udp {
        run(
            UdpServer::bind(addr, &options, concurrency, handler),
            quiet,
            allow,
        );
    } else {
        run(
            TcpServer::bind(addr, &options, concurrency, handler),
            quiet,
            allow,
        );
    }
    // ANCHOR_END: options
}

/// The value of `--max-threads` or `--max-children`: 1 to 10,000.
fn bound(args: &Args, flag: &str, default: usize) -> usize {
    let value = args.get_or(flag, default);
    if !(1..=10_000).contains(&value) {
        args.usage_error(&format!("{flag} must be 1 to 10000"));
    }
    value
}

// ANCHOR: run
/// Python's `with server: server.serve_forever()`, with Ctrl-C wired to `shutdown()`.
fn run<S: BaseServer>(server: Result<S, String>, quiet: bool, allow: Option<String>) {
    let mut server = server.unwrap_or_else(|message| exit_with_error(&message));
    // The signal thread calls shutdown(), which returns once serve_forever has. It is
    // installed before the `listening on` line: whoever starts us may send SIGINT as
    // soon as they have read it.
    let handle = server.shutdown_handle();
    signal::on_shutdown(move || handle.shutdown())
        .unwrap_or_else(|message| exit_with_error(&message));
    log::listening(server.server_address());
    if !quiet {
        workbook::log!("mode: {}", server.describe());
        if let Some(allow) = allow {
            workbook::log!("allow: {allow} (verify_request turns away everyone else)");
        }
    }
    server.serve_forever();
    // Every request has ended, every thread is joined, every child reaped: only now.
    let summary = server.server_close();
    log::last_line(format!("{}: {summary}", log::SHUTTING_DOWN));
}
// ANCHOR_END: run

#[cfg(test)]
mod tests {
    use super::count_line_ends;

    #[test]
    fn line_ends_in_one_chunk_and_across_two() {
        let mut after_cr = false;
        assert_eq!(count_line_ends(b"Hello", &mut after_cr), 0);
        assert_eq!(count_line_ends(b"World\r\n", &mut after_cr), 1);
        assert_eq!(count_line_ends(b"a\r\nb\r\n", &mut after_cr), 2);
        assert_eq!(count_line_ends(b"\n\r\r\n", &mut after_cr), 1);
        assert_eq!(count_line_ends(b"split\r", &mut after_cr), 0);
        assert!(after_cr);
        assert_eq!(count_line_ends(b"\nrest", &mut after_cr), 1);
        assert_eq!(count_line_ends(b"\r", &mut after_cr), 0);
        assert_eq!(count_line_ends(b"x\n", &mut after_cr), 0);
    }
}
