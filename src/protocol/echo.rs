//! The echo protocol of lessons 04 to 08: any bytes come back unchanged, on many
//! connections at once; after the client's half-close the server closes.

use std::io::Write;
use std::net::TcpStream;
use std::thread;

use socket2::SockRef;

use super::{
    Check, Target, connect, expect_reply, expect_same, half_close, quoted, read_to_close, send,
};

const MESSAGE: Check = Check {
    name: "echo-message",
    about: "one line comes back unchanged",
    run: one_message,
};
const BINARY: Check = Check {
    name: "echo-binary",
    about: "all 256 byte values, zero bytes and invalid UTF-8 included, come back unchanged",
    run: binary,
};
const SINGLE_BYTES: Check = Check {
    name: "echo-single-bytes",
    about: "a message sent one byte per write comes back whole",
    run: single_bytes,
};
const LARGE: Check = Check {
    name: "echo-large",
    about: "4 MiB, sent while the echo is read, come back unchanged",
    run: large,
};
const MANY_CLIENTS: Check = Check {
    name: "echo-many-clients",
    about: "20 connections send before any reads; each gets its own echo",
    run: many_clients,
};
const CLIENTS_IN_TURN: Check = Check {
    name: "echo-clients-in-turn",
    about: "20 clients one after another, each gets its own echo",
    run: clients_in_turn,
};
const HALF_CLOSE: Check = Check {
    name: "echo-half-close",
    about: "after the client's half-close the echo still comes, then the server closes",
    run: half_close_then_close,
};
const IDLE_CLIENT: Check = Check {
    name: "echo-idle-client",
    about: "a connected client that sends nothing does not delay another",
    run: idle_client,
};
const AFTER_RESET: Check = Check {
    name: "echo-after-reset",
    about: "a client that resets mid-message does not stop the server",
    run: after_reset,
};

/// Servers that serve any number of clients at once (04, 05, 06, 08).
pub(crate) static CONCURRENT: &[Check] = &[
    MESSAGE,
    BINARY,
    SINGLE_BYTES,
    LARGE,
    MANY_CLIENTS,
    HALF_CLOSE,
    IDLE_CLIENT,
    AFTER_RESET,
];

/// A fixed pool of workers (07): each serves one client at a time, so only as many
/// clients as it has workers are served at once; the rest wait their turn.
pub(crate) static POOLED: &[Check] = &[
    MESSAGE,
    BINARY,
    SINGLE_BYTES,
    LARGE,
    CLIENTS_IN_TURN,
    HALF_CLOSE,
    IDLE_CLIENT,
    AFTER_RESET,
];

fn clients_in_turn(target: &Target) -> Result<(), String> {
    for index in 0..20 {
        let mut stream = connect(target)?;
        let message = format!(
            "client {index} of 20, in turn
"
        );
        send(&mut stream, message.as_bytes())?;
        let what = format!("client {index} of 20");
        expect_reply(&mut stream, &what, message.as_bytes(), message.as_bytes())?;
    }
    Ok(())
}

fn one_message(target: &Target) -> Result<(), String> {
    let mut stream = connect(target)?;
    let message = b"hello, echo\n";
    send(&mut stream, message)?;
    expect_reply(&mut stream, "the echo", message, message)
}

fn binary(target: &Target) -> Result<(), String> {
    let mut stream = connect(target)?;
    let message: Vec<u8> = (0..=255u8).rev().collect();
    send(&mut stream, &message)?;
    expect_reply(
        &mut stream,
        "the echo of 256 byte values",
        &message,
        &message,
    )
}

fn single_bytes(target: &Target) -> Result<(), String> {
    let mut stream = connect(target)?;
    // TCP_NODELAY: each one-byte write leaves at once as a segment of its own, so
    // the server really sees the message in pieces.
    let _ = stream.set_nodelay(true);
    let message = b"sent one byte at a time\n";
    for byte in message {
        send(&mut stream, std::slice::from_ref(byte))?;
    }
    expect_reply(&mut stream, "the echo of single bytes", message, message)
}

fn large(target: &Target) -> Result<(), String> {
    let stream = connect(target)?;
    let payload: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let mut writer = stream
        .try_clone()
        .map_err(|err| format!("cannot clone the socket: {err}"))?;
    let mut reader = stream;
    // Write on one thread and read on another: the echo fills our receive buffer
    // while we are still sending, and a client that only wrote would deadlock.
    let echo = thread::scope(|scope| {
        let sending = scope.spawn(|| {
            writer
                .write_all(&payload)
                .map_err(|err| format!("sending 4 MiB: {err}"))?;
            half_close(&writer)
        });
        let echo = read_to_close(&mut reader, payload.len() + 1);
        let sent = sending
            .join()
            .unwrap_or_else(|_| Err("the sending thread panicked".into()));
        sent.and(echo)
    })?;
    expect_same("the echo of 4 MiB", &payload[..32], &echo, &payload)
}

fn many_clients(target: &Target) -> Result<(), String> {
    let mut streams: Vec<TcpStream> = Vec::new();
    for _ in 0..20 {
        streams.push(connect(target)?);
    }
    for (index, stream) in streams.iter_mut().enumerate() {
        send(stream, format!("message from client {index}\n").as_bytes())?;
    }
    for (index, stream) in streams.iter_mut().enumerate() {
        let message = format!("message from client {index}\n");
        let what = format!("client {index} of 20");
        expect_reply(stream, &what, message.as_bytes(), message.as_bytes())?;
    }
    Ok(())
}

fn half_close_then_close(target: &Target) -> Result<(), String> {
    let mut stream = connect(target)?;
    let message = b"the last words before a half-close";
    send(&mut stream, message)?;
    half_close(&stream)?;
    let got = read_to_close(&mut stream, message.len() + 1)?;
    expect_same("the echo after a half-close", message, &got, message)
}

fn idle_client(target: &Target) -> Result<(), String> {
    let _idle = connect(target)?;
    let mut busy = connect(target)?;
    let message = b"the idle one must not hold me up\n";
    send(&mut busy, message)?;
    expect_reply(
        &mut busy,
        "the echo beside an idle client",
        message,
        message,
    )
    .map_err(|why| format!("{why} (with another client connected and silent)"))
}

fn after_reset(target: &Target) -> Result<(), String> {
    let mut doomed = connect(target)?;
    send(&mut doomed, b"half a mess")?;
    // SO_LINGER with a zero timeout: close(2) sends a reset (RST) instead of a FIN.
    SockRef::from(&doomed)
        .set_linger(Some(std::time::Duration::ZERO))
        .map_err(|err| format!("cannot set SO_LINGER: {err}"))?;
    drop(doomed);
    let mut next =
        connect(target).map_err(|why| format!("after a client reset its connection: {why}"))?;
    let message = b"still serving?\n";
    send(&mut next, message)?;
    expect_reply(
        &mut next,
        "the echo after another client's reset",
        message,
        message,
    )
    .map_err(|why| format!("{why}; sent before: {}", quoted(b"half a mess")))
}
