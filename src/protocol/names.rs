//! The protocol of lesson 15: one dual-stack IPv6 socket. Each client first gets one
//! line saying how the server sees it,
//!
//! ```text
//! hello ::ffff:127.0.0.1 port 47686: an IPv4 client (127.0.0.1) on an IPv6 socket\n
//! hello ::1 port 58514: an IPv6 client\n
//! ```
//!
//! (the address and port accept(2) returned: the client's own), then every byte it
//! sends comes back unchanged. After the client's half-close the server closes.
//! The IPv4 and IPv6 checks connect over 127.0.0.1 and ::1 when the target is this
//! machine (a loopback or wildcard address), so one port is checked over both.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use socket2::SockRef;

use super::{
    Check, Target, connect, expect_reply, expect_same, half_close, quoted, read_to_close, send,
};

pub(crate) static NAMES: &[Check] = &[
    Check {
        name: "names-greeting-ipv4",
        about: "over IPv4: `hello ::ffff:127.0.0.1 port P: an IPv4 client (127.0.0.1) on an IPv6 socket`",
        run: greeting_ipv4,
    },
    Check {
        name: "names-greeting-ipv6",
        about: "over IPv6: `hello ::1 port P: an IPv6 client`",
        run: greeting_ipv6,
    },
    Check {
        name: "names-echo",
        about: "after the greeting, a line, all 256 byte values and a UTF-8 character sent in two halves come back unchanged",
        run: echo_after_greeting,
    },
    Check {
        name: "names-large",
        about: "after the greeting, 1 MiB sent while the echo is read comes back unchanged",
        run: large,
    },
    Check {
        name: "names-many-clients",
        about: "10 clients, IPv4 and IPv6 in turn, all connected at once: each its own greeting and echo",
        run: many_clients,
    },
    Check {
        name: "names-half-close",
        about: "after the client's half-close the echo still comes, then the server closes",
        run: half_close_then_close,
    },
    Check {
        name: "names-after-reset",
        about: "a client that resets right after connecting does not stop the server",
        run: after_reset,
    },
];

/// The longest greeting line a check reads.
const GREETING_LIMIT: usize = 1024;

/// Which IP family a check connects with.
#[derive(Clone, Copy, PartialEq)]
enum Family {
    V4,
    V6,
}

/// The address to connect to over `family`: for a server on this machine, 127.0.0.1 or
/// ::1 with the target's port; otherwise the target itself if it is of that family.
fn address(target: &Target, family: Family) -> Result<SocketAddr, String> {
    let port = target.addr.port();
    // A v4-mapped target (::ffff:127.0.0.1) is an IPv4 address.
    let ip = target.addr.ip().to_canonical();
    let this_machine = ip.is_loopback() || ip.is_unspecified();
    match (family, ip) {
        (Family::V4, _) if this_machine => Ok(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)),
        (Family::V6, _) if this_machine => Ok(SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port)),
        (Family::V4, IpAddr::V4(_)) | (Family::V6, IpAddr::V6(_)) => Ok(SocketAddr::new(ip, port)),
        _ => Err(format!(
            "cannot check over {} with the target {}: run the checks against a server on this \
             machine (127.0.0.1, ::1 or ::), which has both",
            if family == Family::V4 { "IPv4" } else { "IPv6" },
            target.addr
        )),
    }
}

/// The greeting the server owes a client whose socket has `local` as its address.
fn expected_greeting(local: SocketAddr) -> String {
    let who = match local.ip() {
        IpAddr::V4(v4) => {
            return format!(
                "hello {} port {}: an IPv4 client ({v4}) on an IPv6 socket\n",
                v4.to_ipv6_mapped(),
                local.port()
            );
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("an IPv4 client ({v4}) on an IPv6 socket"),
            None => "an IPv6 client".to_string(),
        },
    };
    format!("hello {} port {}: {who}\n", local.ip(), local.port())
}

/// Reads one line, a byte at a time (what follows it stays in the socket).
fn read_greeting(stream: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < GREETING_LIMIT {
        match stream.read(&mut byte) {
            Ok(0) => {
                return Err(format!(
                    "the server closed the connection before the end of the greeting line; got {}",
                    quoted(&line)
                ));
            }
            Ok(_) => {
                line.push(byte[0]);
                if byte[0] == b'\n' {
                    return Ok(line);
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => {
                return Err(format!(
                    "no greeting line ({err}); got {} (a greeting ends with \\n)",
                    quoted(&line)
                ));
            }
        }
    }
    Err(format!(
        "no end of line in the first {GREETING_LIMIT} bytes: {}",
        quoted(&line)
    ))
}

/// Connects over `family`, reads the greeting and checks it names this connection.
fn greeted(target: &Target, family: Family) -> Result<TcpStream, String> {
    let addr = address(target, family)?;
    let mut stream = connect(&Target {
        addr,
        ..target.clone()
    })?;
    let local = stream
        .local_addr()
        .map_err(|err| format!("getsockname: {err}"))?;
    let want = expected_greeting(local);
    let got = read_greeting(&mut stream).map_err(|why| format!("connected to {addr}: {why}"))?;
    expect_same(
        &format!("the greeting of a client at {local} (connected to {addr})"),
        b"",
        &got,
        want.as_bytes(),
    )?;
    Ok(stream)
}

fn greeting_ipv4(target: &Target) -> Result<(), String> {
    greeted(target, Family::V4).map(drop)
}

fn greeting_ipv6(target: &Target) -> Result<(), String> {
    greeted(target, Family::V6).map(drop)
}

/// The family of the target as given (for the checks that need only one).
/// (`::` counts as IPv4: the family every server of this protocol serves.)
fn any_family(target: &Target) -> Family {
    match target.addr.ip().to_canonical() {
        IpAddr::V6(v6) if !v6.is_unspecified() => Family::V6,
        _ => Family::V4,
    }
}

fn echo_after_greeting(target: &Target) -> Result<(), String> {
    let mut stream = greeted(target, any_family(target))?;
    let line = b"hello after the greeting\n";
    send(&mut stream, line)?;
    expect_reply(&mut stream, "the echo of a line", line, line)?;
    let every_byte: Vec<u8> = (0..=255u8).collect();
    send(&mut stream, &every_byte)?;
    expect_reply(
        &mut stream,
        "the echo of 256 byte values",
        &every_byte,
        &every_byte,
    )?;
    // "é" is two bytes in UTF-8: sent in two segments, it must come back whole (a
    // server that decoded each read as text would mangle it).
    let _ = stream.set_nodelay(true);
    let word = "café\n".as_bytes();
    let split = word.len() - 2;
    send(&mut stream, &word[..split])?;
    send(&mut stream, &word[split..])?;
    expect_reply(
        &mut stream,
        "the echo of a character split between two writes",
        word,
        word,
    )
}

fn large(target: &Target) -> Result<(), String> {
    let stream = greeted(target, any_family(target))?;
    let payload: Vec<u8> = (0..1024 * 1024).map(|i| (i % 253) as u8).collect();
    let mut writer = stream
        .try_clone()
        .map_err(|err| format!("cannot clone the socket: {err}"))?;
    let mut reader = stream;
    // Write on one thread and read on another: a client that only wrote would
    // deadlock once the echo filled both directions' buffers.
    let echo = thread::scope(|scope| {
        let sending = scope.spawn(|| {
            writer
                .write_all(&payload)
                .map_err(|err| format!("sending 1 MiB: {err}"))?;
            half_close(&writer)
        });
        let echo = read_to_close(&mut reader, payload.len() + 1);
        let sent = sending
            .join()
            .unwrap_or_else(|_| Err("the sending thread panicked".into()));
        sent.and(echo)
    })?;
    expect_same("the echo of 1 MiB", &payload[..32], &echo, &payload)
}

fn many_clients(target: &Target) -> Result<(), String> {
    let mut streams = Vec::new();
    for index in 0..10 {
        let family = if index % 2 == 0 {
            Family::V4
        } else {
            Family::V6
        };
        let stream = greeted(target, family)
            .map_err(|why| format!("client {index} of 10, with {} open: {why}", streams.len()))?;
        streams.push(stream);
    }
    for (index, stream) in streams.iter_mut().enumerate() {
        send(stream, format!("from client {index}\n").as_bytes())?;
    }
    for (index, stream) in streams.iter_mut().enumerate() {
        let message = format!("from client {index}\n");
        let what = format!("client {index} of 10");
        expect_reply(stream, &what, message.as_bytes(), message.as_bytes())?;
    }
    Ok(())
}

fn half_close_then_close(target: &Target) -> Result<(), String> {
    let mut stream = greeted(target, any_family(target))?;
    let message = b"the last words before a half-close";
    send(&mut stream, message)?;
    half_close(&stream)?;
    let got = read_to_close(&mut stream, message.len() + 1)?;
    expect_same("the echo after a half-close", message, &got, message)
}

fn after_reset(target: &Target) -> Result<(), String> {
    let addr = address(target, any_family(target))?;
    let doomed = connect(&Target {
        addr,
        ..target.clone()
    })?;
    // SO_LINGER 0: close(2) sends a reset (RST), maybe before the greeting is written.
    SockRef::from(&doomed)
        .set_linger(Some(Duration::ZERO))
        .map_err(|err| format!("cannot set SO_LINGER: {err}"))?;
    drop(doomed);
    let mut next =
        greeted(target, any_family(target)).map_err(|why| format!("after a reset: {why}"))?;
    let message = b"still serving?\n";
    send(&mut next, message)?;
    expect_reply(
        &mut next,
        "the echo after another client's reset",
        message,
        message,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greetings_spell_the_address_as_an_ipv6_socket_sees_it() {
        let v4: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(
            expected_greeting(v4),
            "hello ::ffff:127.0.0.1 port 4000: an IPv4 client (127.0.0.1) on an IPv6 socket\n"
        );
        let v6: SocketAddr = "[::1]:4001".parse().unwrap();
        assert_eq!(
            expected_greeting(v6),
            "hello ::1 port 4001: an IPv6 client\n"
        );
    }
}
