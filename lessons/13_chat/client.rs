//! Lesson 13, the client: joins the chat room, prints every line the server sends
//! the moment it comes, and sends every line you type.
//!
//!   cargo run --bin 13_chat_client -- --name ada                  (type; Ctrl-D leaves)
//!   cargo run --bin 13_chat_client -- --name bob "hello, room" /who
//!   printf 'cy\nhi\n/who\n' | cargo run --bin 13_chat_client
//!
//! Two things may happen at any moment: a line arrives from the room, or you finish
//! typing one. So two threads, each blocked in its own read: this one reads stdin
//! and writes to the socket, the other reads the socket and writes to stdout.

/// Lines from the server, whole, as the server reads ours.
mod lines;

use std::io::{self, BufRead, ErrorKind, IsTerminal, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use lines::{Line, LineReader};
use workbook::cli::Cli;
use workbook::{connect_failed, exit_on_stdout_error, exit_with_error, print_line};

const DEFAULT_PORT: u16 = 10013;
/// After the last line is sent (and our side half-closed), how long to wait for the
/// server to answer and close before giving up.
const REPLY_WAIT: Duration = Duration::from_secs(5);
/// How long one send may make no progress (the server not reading) before giving up.
const SEND_WAIT: Duration = Duration::from_secs(5);
/// The longest line from the server this client shows (a longer one is cut).
const MAX_SERVER_LINE: usize = 64 * 1024;
/// The server's question for a name (`* what is your name? ...`) starts so.
const ASK_NAME: &str = "* what is your name?";

fn main() {
    let args = Cli::new(
        "13_chat_client",
        "Lesson 13: joins the chat room; prints what the room says as it comes, sends \
         each MESSAGE (or each line you type) to the room.",
        DEFAULT_PORT,
    )
    .value("--name", "NAME", "send NAME as your name first")
    .positional(
        "MESSAGE",
        "lines to send, in order, then leave (default: the lines of stdin)",
    )
    .parse();
    let addr = args
        .socket_addr()
        .unwrap_or_else(|message| exit_with_error(&message));

    // ANCHOR: connect
    let stream = TcpStream::connect(addr).unwrap_or_else(|err| {
        exit_with_error(&connect_failed(addr, &err, "13_chat_server"));
    });
    // SO_SNDTIMEO: a send that the kernel can take nothing of for SEND_WAIT fails
    // (EAGAIN) instead of blocking for ever when the server does not read.
    if let Err(err) = stream.set_write_timeout(Some(SEND_WAIT)) {
        exit_with_error(&format!("cannot set a send timeout: {err}"));
    }
    // A second handle on the same socket (fcntl(F_DUPFD_CLOEXEC): dup(2), closed on
    // exec), for the thread that reads.
    let from_server = stream
        .try_clone()
        .unwrap_or_else(|err| exit_with_error(&format!("cannot duplicate the socket: {err}")));
    // A prompt only on a terminal: stdin one to type at, stdout one to look at.
    let prompt = io::stdin().is_terminal() && io::stdout().is_terminal();
    let (done, finished) = mpsc::channel();
    let (named, name_taken) = mpsc::channel();
    thread::spawn(move || {
        let outcome = print_lines(from_server, prompt, named);
        let _ = done.send(());
        if prompt {
            erase_prompt();
        }
        match outcome {
            Ok(()) => std::process::exit(0),
            Err(message) => exit_with_error(&message),
        }
    });
    // ANCHOR_END: connect

    // ANCHOR: send
    let mut to_server = &stream;
    let mut send = |line: &[u8]| to_server.write_all(&[line, b"\n"].concat());
    let mut sent = Ok(());
    if let Some(name) = args.get::<String>("--name") {
        sent = send(name.as_bytes());
        // Refused (taken, or not a name), the server asks again, and each message
        // would be taken as a name: stop here instead.
        if sent.is_ok() && name_taken.recv_timeout(REPLY_WAIT) == Ok(false) {
            fail(prompt, &format!("the server refused the name {name}"));
        }
    }
    let sent = sent.and_then(|()| {
        if args.messages.is_empty() {
            each_line_of_stdin(prompt, &mut send)
        } else {
            args.messages
                .iter()
                .try_for_each(|message| send(message.as_bytes()))
        }
    });
    match sent {
        // Half-close: "no more from me". The server answers what we sent, then
        // closes; the reading thread sees the end and ends the program.
        Ok(()) => {
            let _ = stream.shutdown(Shutdown::Write);
        }
        // SO_SNDTIMEO ran out: the server's buffers and ours are full.
        Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            fail(
                prompt,
                &format!(
                    "the server took nothing more of our lines for {} s (it is not reading)",
                    SEND_WAIT.as_secs()
                ),
            );
        }
        // Any other failed send means the server is gone: the reading thread says how.
        Err(_) => {}
    }
    if finished.recv_timeout(REPLY_WAIT).is_err() {
        fail(
            prompt,
            &format!(
                "the server did not close the connection within {} s of our last line",
                REPLY_WAIT.as_secs()
            ),
        );
    }
    // ANCHOR_END: send
    // The reading thread ends the program (with its status); wait for it to do so.
    loop {
        thread::park();
    }
}

/// Sends each line of stdin (without its line end) until the end of input, with a
/// `> ` prompt when stdin (and stdout) is a terminal.
fn each_line_of_stdin(
    prompt: bool,
    send: &mut impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut input = io::stdin().lock();
    let mut line = Vec::new();
    loop {
        if prompt {
            show_prompt();
        }
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        send(text.strip_suffix(b"\r").unwrap_or(text))?;
    }
}

// ANCHOR: print_lines
/// The reading thread: each line from the server, printed as it comes, until the
/// server closes (`Ok`) or the connection fails (`Err`, the message for the user).
/// On the way it tells `named` whether our name was taken: `true` at `* welcome`
/// (or at a first line that is not the question: no room, no name), `false` when
/// the question for a name comes a second time.
fn print_lines(
    mut from_server: TcpStream,
    prompt: bool,
    named: mpsc::Sender<bool>,
) -> Result<(), String> {
    let mut reader = LineReader::new(MAX_SERVER_LINE);
    let mut buffer = [0u8; 16 * 1024];
    let mut asked = 0;
    loop {
        let lines = match from_server.read(&mut buffer) {
            Ok(0) => {
                // A last line without `\n` is still shown.
                reader
                    .finish()
                    .into_iter()
                    .for_each(|line| show(line, prompt));
                return Ok(());
            }
            Ok(n) => reader.feed(&buffer[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(format!("lost the connection to the server: {err}")),
        };
        for line in lines {
            if let Line::Text(text) = &line {
                if text.starts_with(ASK_NAME) {
                    asked += 1;
                    if asked > 1 {
                        let _ = named.send(false);
                    }
                } else if asked == 0 || text.starts_with("* welcome ") {
                    let _ = named.send(true);
                }
            }
            show(line, prompt);
        }
    }
}
// ANCHOR_END: print_lines

/// One line from the server on stdout. At a prompt, the line replaces the prompt
/// (`\r` and "erase to the end of the line"), and the prompt is shown again below
/// it; what you had typed so far is still in the terminal's line, just not redrawn.
fn show(line: Line, prompt: bool) {
    let text = match line {
        Line::Text(text) => text,
        Line::TooLong => format!("(a line longer than {MAX_SERVER_LINE} bytes, not shown)"),
    };
    if prompt {
        let mut out = io::stdout().lock();
        if let Err(err) = write!(out, "\r\x1b[K{text}\n> ").and_then(|()| out.flush()) {
            exit_on_stdout_error(&err);
        }
    } else {
        print_line(&text);
    }
}

/// Erases the prompt, last thing on a terminal, so that the shell's comes on a
/// clean line.
fn erase_prompt() {
    let mut out = io::stdout().lock();
    let _ = write!(out, "\r\x1b[K").and_then(|()| out.flush());
}

/// Ends the program with `error: MESSAGE` (on stderr), the prompt erased first.
fn fail(prompt: bool, message: &str) -> ! {
    if prompt {
        erase_prompt();
    }
    exit_with_error(message)
}

fn show_prompt() {
    let mut out = io::stdout().lock();
    if let Err(err) = write!(out, "> ").and_then(|()| out.flush()) {
        exit_on_stdout_error(&err);
    }
}
