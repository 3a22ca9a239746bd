//! `workbook`: the plumbing the lessons share, so that each lesson file can show
//! only its socket calls.
//!
//! - [`cli`]: `--host`, `--port`, lesson flags, `--help`, usage errors (exit 2);
//! - [`show`]: both ends of a connection, and received bytes printed safely;
//! - [`options`]: reading socket options into a table (lesson 02);
//! - [`signal`]: Ctrl-C and SIGTERM, and the self-pipe that wakes an event loop;
//! - [`log`]: the servers' log on stdout, which never panics and never blocks;
//! - [`listener`]: socket, SO_REUSEADDR, bind, listen, as lessons 01-02 taught them;
//! - [`output`]: a connection's bounded output buffer (lesson 04 teaches it);
//! - [`echo_connection`]: one client of the select and poll echo servers (04, 05);
//! - [`live`]: the live connections of a threaded server, for shutdown (lesson 06);
//! - [`protocol`]: each lesson's wire protocol as checks any server can be put through;
//! - [`echo_client`]: the many-connection client of the echo lessons (04 and up);
//! - [`time`]: the `ctime` format of Python's `time.ctime()`;
//! - [`tls`]: PEM files, a client that trusts one CA, TLS errors in a line (lesson 14);
//! - [`strace`]: strace output read and drawn as a sequence diagram (the front door's
//!   `trace NN`; a tool, not a lesson);
//! - here: [`exit_with_error`], one clear `error: ...` line and exit status 1, with a
//!   hint where one helps; [`room_for_descriptors`], for the clients that open many
//!   connections; [`print_line`] and [`exit_on_stdout_error`], stdout for
//!   the clients and tools, which stop quietly when nobody reads it any more.

pub mod cli;
pub mod echo_client;
pub mod echo_connection;
pub mod listener;
pub mod live;
pub mod log;
pub mod options;
pub mod output;
pub mod protocol;
pub mod show;
pub mod signal;
pub mod strace;
pub mod time;
pub mod tls;

use std::io;
use std::net::SocketAddr;

/// Prints `error: <message>` on stderr and exits the process with status 1. (Not
/// `eprintln!`, which panics when stderr is closed.)
pub fn exit_with_error(message: &str) -> ! {
    use std::io::Write;
    let _ = writeln!(io::stderr(), "error: {message}");
    std::process::exit(1);
}

/// Makes room for `wanted` open descriptors (`what` says for what): raises the soft
/// limit (RLIMIT_NOFILE) towards it. Err, with the numbers, when even the hard limit
/// is lower: more than this process may ever hold, so asking is the caller's error
/// (and a `Vec` for that many connections would not even be allocated). A soft
/// limit that cannot be raised is only warned about: connect then says EMFILE.
pub fn room_for_descriptors(wanted: usize, what: &str) -> Result<(), String> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    use std::io::Write;
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return Ok(());
    };
    if hard < wanted as u64 {
        // usize::MAX is a caller's sum that saturated (conns + a few more): no count
        // to show, only that it is past the limit.
        let needed = if wanted == usize::MAX {
            format!("more than {hard}")
        } else {
            wanted.to_string()
        };
        return Err(format!(
            "{needed} descriptors needed ({what}), but the hard limit is {hard}: \
             raise it (ulimit -Hn, as root) or ask for fewer"
        ));
    }
    if soft < wanted as u64
        && let Err(err) = setrlimit(Resource::RLIMIT_NOFILE, wanted as u64, hard)
    {
        // Not eprintln!, which panics when stderr is closed.
        let _ = writeln!(
            io::stderr(),
            "warning: cannot raise the descriptor limit to {wanted}: {err}"
        );
    }
    Ok(())
}

/// The message for a failed `bind(2)`, with a hint for the usual causes.
pub fn bind_failed(addr: SocketAddr, err: &io::Error) -> String {
    let hint = match err.kind() {
        io::ErrorKind::AddrInUse => {
            "; another program (or another copy of this server) has this port: \
             stop it, or pick another with --port (--port 0 takes any free port)"
        }
        io::ErrorKind::AddrNotAvailable => {
            "; that address is not one of this machine's (see `ip addr`), try --host 127.0.0.1"
        }
        io::ErrorKind::PermissionDenied if addr.port() < 1024 => {
            "; ports below 1024 need root or CAP_NET_BIND_SERVICE, use a port above 1023"
        }
        _ => "",
    };
    format!("cannot bind {addr}: {err}{hint}")
}

/// The message for a failed `connect(2)`, naming the server to start when none answers.
pub fn connect_failed(addr: SocketAddr, err: &io::Error, server_bin: &str) -> String {
    let hint = match err.kind() {
        io::ErrorKind::ConnectionRefused => {
            format!("; is the server running? start it with: cargo run --bin {server_bin}")
        }
        io::ErrorKind::TimedOut => "; nothing answered: check --host and --port".to_string(),
        _ => String::new(),
    };
    format!("cannot connect to {addr}: {err}{hint}")
}

/// Prints one line on stdout, for a client or a tool (a server logs with
/// [`log!`] instead). If stdout fails, [`exit_on_stdout_error`].
pub fn print_line(line: &str) {
    use std::io::Write;
    let mut out = io::stdout().lock();
    if let Err(err) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        exit_on_stdout_error(&err);
    }
}

/// What a client or a tool does when writing to stdout fails: it stops. A closed pipe
/// (EPIPE: `client | head -1` after head has exited) means nobody reads any more,
/// which is nobody's error: exit quietly, status 0. Anything else (a full disk) gets
/// one `error:` line and status 1. (`println!` would panic in both cases.)
pub fn exit_on_stdout_error(err: &io::Error) -> ! {
    if err.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    exit_with_error(&format!("cannot write to stdout: {err}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_hint_names_the_address_and_the_cause() {
        let addr: SocketAddr = "127.0.0.1:21567".parse().unwrap();
        let text = bind_failed(addr, &io::Error::from(io::ErrorKind::AddrInUse));
        assert!(text.starts_with("cannot bind 127.0.0.1:21567: "), "{text}");
        assert!(text.contains("--port 0"), "{text}");
        let low: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let denied = bind_failed(low, &io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(denied.contains("CAP_NET_BIND_SERVICE"), "{denied}");
    }

    #[test]
    fn connect_hint_names_the_server() {
        let addr: SocketAddr = "127.0.0.1:8009".parse().unwrap();
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let text = connect_failed(addr, &refused, "05_poll_server");
        assert!(
            text.starts_with("cannot connect to 127.0.0.1:8009: "),
            "{text}"
        );
        assert!(
            text.ends_with("start it with: cargo run --bin 05_poll_server"),
            "{text}"
        );
    }
}
