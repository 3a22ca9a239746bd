//! The protocol of lesson 16 (local sockets), on each of its three transports:
//! - an AF_UNIX stream socket at a path: any bytes come back unchanged; bytes that
//!   arrive with a descriptor (SCM_RIGHTS) are answered instead with the line
//!   `fd: read N bytes of SIZE: "TEXT"\n`, where TEXT is the start of the file read
//!   through that descriptor, escaped as `workbook::show::bytes` escapes it (or
//!   `fd: not a regular file, not read`, `fd: cannot fstat it: ERROR`, `fd: read
//!   failed after N bytes: ERROR`);
//! - an AF_UNIX datagram socket at a path: each datagram is answered, to the path the
//!   sender is bound to, with `echo:` + the datagram;
//! - UDP: the same, to the sender's address and port.

use std::io::{IoSlice, Write};
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

use super::{Check, Target, expect_reply, expect_same, quoted, read_to_close, send};

pub(crate) static STREAM: &[Check] = &[
    Check {
        name: "local-echo-message",
        about: "one line comes back unchanged over the AF_UNIX stream",
        run: echo_message,
    },
    Check {
        name: "local-echo-binary",
        about: "all 256 byte values come back unchanged",
        run: echo_binary,
    },
    Check {
        name: "local-echo-large",
        about: "4 MiB, sent while the echo is read, come back unchanged",
        run: echo_large,
    },
    Check {
        name: "local-many-clients",
        about: "20 connections send before any reads; each gets its own echo",
        run: many_clients,
    },
    Check {
        name: "local-half-close",
        about: "after the client's shutdown(SHUT_WR) the echo still comes, then the server closes",
        run: half_close_then_close,
    },
    Check {
        name: "local-early-close",
        about: "a client that closes without reading its echo does not stop the server",
        run: early_close,
    },
    Check {
        name: "local-pass-fd",
        about: "a descriptor sent with SCM_RIGHTS is answered with `fd: read N bytes of N: \"TEXT\"`",
        run: pass_fd,
    },
];

pub(crate) static DATAGRAM: &[Check] = &[
    Check {
        name: "dgram-echo",
        about: "a datagram `hello` is answered with `echo:hello`, to the sender's path",
        run: dgram_echo,
    },
    Check {
        name: "dgram-binary",
        about: "all 256 byte values come back after `echo:`",
        run: dgram_binary,
    },
    Check {
        name: "dgram-empty",
        about: "an empty datagram is answered with `echo:`",
        run: dgram_empty,
    },
    Check {
        name: "dgram-unbound-sender",
        about: "a datagram from an unbound socket (no address to answer) does not stop the server",
        run: dgram_unbound_sender,
    },
];

pub(crate) static UDP: &[Check] = &[
    Check {
        name: "udp-echo",
        about: "a datagram `hello` is answered with `echo:hello`",
        run: udp_echo,
    },
    Check {
        name: "udp-binary",
        about: "all 256 byte values come back after `echo:`",
        run: udp_binary,
    },
    Check {
        name: "udp-empty",
        about: "an empty datagram is answered with `echo:`",
        run: udp_empty,
    },
];

// Streams.

fn path_of(target: &Target) -> Result<&Path, String> {
    target
        .unix_path
        .as_deref()
        .ok_or_else(|| "no socket path given (check 16 --path PATH)".to_string())
}

fn connect(target: &Target) -> Result<UnixStream, String> {
    let path = path_of(target)?;
    let stream = UnixStream::connect(path).map_err(|err| {
        format!(
            "cannot connect to {}: {err} (is the server running there?)",
            path.display()
        )
    })?;
    let timeouts = stream
        .set_read_timeout(Some(target.timeout))
        .and_then(|()| stream.set_write_timeout(Some(target.timeout)));
    timeouts.map_err(|err| format!("cannot set timeouts: {err}"))?;
    Ok(stream)
}

fn round_trip(target: &Target, message: &[u8]) -> Result<(), String> {
    let mut stream = connect(target)?;
    send(&mut stream, message)?;
    expect_reply(&mut stream, "echo", message, message)
}

fn echo_message(target: &Target) -> Result<(), String> {
    round_trip(target, b"hello, local socket\n")
}

fn echo_binary(target: &Target) -> Result<(), String> {
    let all: Vec<u8> = (0..=255).collect();
    round_trip(target, &all)
}

fn echo_large(target: &Target) -> Result<(), String> {
    const SIZE: usize = 4 * 1024 * 1024;
    let message: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    let mut stream = connect(target)?;
    let mut writer = stream
        .try_clone()
        .map_err(|err| format!("cannot clone the socket: {err}"))?;
    // Written from another thread while this one reads: an echo server that stops
    // reading while its echo is not read would otherwise deadlock both.
    thread::scope(|scope| {
        let sending = scope.spawn(|| send(&mut writer, &message));
        let read = expect_reply(&mut stream, "4 MiB echo", &message[..16], &message);
        let sent = sending
            .join()
            .unwrap_or_else(|_| Err("the sending thread panicked".into()));
        read.and(sent)
    })
}

fn many_clients(target: &Target) -> Result<(), String> {
    let mut streams = Vec::new();
    for number in 0..20 {
        let mut stream = connect(target)?;
        send(&mut stream, format!("client {number}\n").as_bytes())?;
        streams.push(stream);
    }
    for (number, stream) in streams.iter_mut().enumerate() {
        let message = format!("client {number}\n");
        expect_reply(stream, "echo", message.as_bytes(), message.as_bytes())?;
    }
    Ok(())
}

fn half_close_then_close(target: &Target) -> Result<(), String> {
    let message = b"then I stop sending\n";
    let mut stream = connect(target)?;
    send(&mut stream, message)?;
    stream
        .shutdown(std::net::Shutdown::Write)
        .map_err(|err| format!("shutdown(SHUT_WR): {err}"))?;
    let got = read_to_close(&mut stream, 1024)?;
    expect_same("echo before the close", message, &got, message)
}

fn early_close(target: &Target) -> Result<(), String> {
    {
        let mut stream = connect(target)?;
        send(&mut stream, &[b'x'; 64 * 1024])?;
        // Closed here without reading: the server's write fails (EPIPE), not the server.
    }
    round_trip(target, b"still there?\n")
}

/// Where lesson 16's server listens when given no `--path`:
/// `$TMPDIR/socket-workbook-UID/16_local.sock` (usually under `/tmp`). One definition
/// for the server, its client (lessons/16_local/local_path.rs) and `check 16`.
pub fn default_dir() -> PathBuf {
    let uid = nix::unistd::getuid();
    std::env::temp_dir().join(format!("socket-workbook-{uid}"))
}

/// The socket file in [`default_dir`].
pub fn default_path() -> PathBuf {
    default_dir().join("16_local.sock")
}

static UNIQUE: AtomicUsize = AtomicUsize::new(0);

/// A name for a temporary file or socket of this process, unique within it.
fn temporary_path(what: &str) -> PathBuf {
    let number = UNIQUE.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "workbook-check-{}-{number}-{what}",
        std::process::id()
    ))
}

fn pass_fd(target: &Target) -> Result<(), String> {
    let content = b"passed through SCM_RIGHTS\n";
    // A file that has no name any more once opened: the server can read it only
    // through the descriptor, which is the point.
    let path = temporary_path("file");
    let file = std::fs::OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&path)
        .and_then(|mut file| file.write_all(content).map(|()| file));
    let _ = std::fs::remove_file(&path);
    let file = file.map_err(|err| format!("cannot make a file to pass: {err}"))?;
    let mut stream = connect(target)?;
    let fds = [file.as_raw_fd()];
    sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(b"fd")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|err| format!("sendmsg with SCM_RIGHTS: {err}"))?;
    drop(file);
    let want = format!(
        "fd: read {n} bytes of {n}: {}\n",
        crate::show::bytes(content),
        n = content.len()
    );
    expect_reply(
        &mut stream,
        "the reply to a passed descriptor",
        b"fd",
        want.as_bytes(),
    )
}

// Datagrams.

/// An AF_UNIX datagram socket bound to a temporary path, removed when dropped.
struct BoundDatagram {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Drop for BoundDatagram {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn bound_datagram(target: &Target) -> Result<BoundDatagram, String> {
    let path = temporary_path("reply.sock");
    let socket = UnixDatagram::bind(&path)
        .map_err(|err| format!("cannot bind a reply path {}: {err}", path.display()))?;
    socket
        .set_read_timeout(Some(target.timeout))
        .map_err(|err| format!("cannot set a timeout: {err}"))?;
    Ok(BoundDatagram { socket, path })
}

fn expect_echo_reply(sent: &[u8], got: &[u8]) -> Result<(), String> {
    let mut want = b"echo:".to_vec();
    want.extend_from_slice(sent);
    expect_same("the reply datagram", sent, got, &want)
}

fn dgram_ask(target: &Target, message: &[u8]) -> Result<(), String> {
    let server = path_of(target)?;
    let client = bound_datagram(target)?;
    client.socket.send_to(message, server).map_err(|err| {
        format!(
            "sendto {}: {err} (is a --dgram server there?)",
            server.display()
        )
    })?;
    let mut reply = vec![0u8; 70_000];
    let n = client
        .socket
        .recv(&mut reply)
        .map_err(|err| format!("sent {}, no reply: {err}", quoted(message)))?;
    expect_echo_reply(message, &reply[..n])
}

fn dgram_echo(target: &Target) -> Result<(), String> {
    dgram_ask(target, b"hello")
}

fn dgram_binary(target: &Target) -> Result<(), String> {
    let all: Vec<u8> = (0..=255).collect();
    dgram_ask(target, &all)
}

fn dgram_empty(target: &Target) -> Result<(), String> {
    dgram_ask(target, b"")
}

fn dgram_unbound_sender(target: &Target) -> Result<(), String> {
    let server = path_of(target)?;
    let unbound = UnixDatagram::unbound().map_err(|err| format!("cannot make a socket: {err}"))?;
    unbound
        .send_to(b"nobody to answer", server)
        .map_err(|err| format!("sendto {}: {err}", server.display()))?;
    dgram_ask(target, b"after an unbound sender")
}

// UDP.

/// UDP may lose a datagram (loopback hardly ever does): a few tries.
const UDP_TRIES: u32 = 3;

fn udp_ask(target: &Target, message: &[u8]) -> Result<(), String> {
    let bind_to = if target.addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = UdpSocket::bind(bind_to)
        .and_then(|socket| socket.connect(target.addr).map(|()| socket))
        .map_err(|err| format!("cannot open a UDP socket to {}: {err}", target.addr))?;
    socket
        .set_read_timeout(Some(target.timeout / UDP_TRIES))
        .map_err(|err| format!("cannot set a timeout: {err}"))?;
    let mut reply = vec![0u8; 70_000];
    let mut last_error = String::new();
    for _ in 0..UDP_TRIES {
        socket
            .send(message)
            .map_err(|err| format!("send to {}: {err}", target.addr))?;
        match socket.recv(&mut reply) {
            Ok(n) => return expect_echo_reply(message, &reply[..n]),
            Err(err) => last_error = err.to_string(),
        }
    }
    Err(format!(
        "sent {} to {} {UDP_TRIES} times, no reply ({last_error})",
        quoted(message),
        target.addr
    ))
}

fn udp_echo(target: &Target) -> Result<(), String> {
    udp_ask(target, b"hello")
}

fn udp_binary(target: &Target) -> Result<(), String> {
    let all: Vec<u8> = (0..=255).collect();
    udp_ask(target, &all)
}

fn udp_empty(target: &Target) -> Result<(), String> {
    udp_ask(target, b"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_names_are_unique_across_the_three_transports() {
        let mut names: Vec<&str> = STREAM
            .iter()
            .chain(DATAGRAM)
            .chain(UDP)
            .map(|check| check.name)
            .collect();
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count);
    }
}
