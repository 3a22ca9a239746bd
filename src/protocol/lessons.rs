//! The protocols of lessons 01, 02, 03, 09 and 10 (the echo lessons are in `echo`).

use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{
    Check, Target, connect, expect_same, half_close, is_ctime, quoted, read_to_close, read_up_to,
    send,
};

// Lesson 01: for each chunk received, `[<ctime>] <chunk>`; open until the client closes.

pub(crate) static TCP_BASICS: &[Check] = &[
    Check {
        name: "stamp-message",
        about: "a message comes back as `[<ctime>] <message>`",
        run: stamp_message,
    },
    Check {
        name: "stamp-binary",
        about: "bytes that are not text come back unchanged after the stamp",
        run: stamp_binary,
    },
    Check {
        name: "stamp-stays-open",
        about: "a second message on the same connection gets a second stamped reply",
        run: stamp_stays_open,
    },
    Check {
        name: "stamp-clients-in-turn",
        about: "after one client closes, the next is served",
        run: stamp_clients_in_turn,
    },
];

/// `[` + a 24-character ctime + `] `.
const STAMP: usize = 27;

/// Sends `message` and reads stamped chunks until their data adds up to it.
fn expect_stamped(stream: &mut TcpStream, message: &[u8]) -> Result<(), String> {
    send(stream, message)?;
    let mut data = Vec::new();
    let mut reply = Vec::new();
    while data.len() < message.len() {
        let (stamp, ended) = read_up_to(stream, STAMP);
        reply.extend_from_slice(&stamp);
        let text = String::from_utf8_lossy(&stamp);
        if stamp.len() < STAMP
            || !text.starts_with('[')
            || !text.ends_with("] ")
            || !is_ctime(&text[1..STAMP - 2])
        {
            return Err(format!(
                "sent {}, expected `[<ctime>] ` and the message back, got {}{}",
                quoted(message),
                quoted(&reply),
                ended.map(|why| format!(" ({why})")).unwrap_or_default()
            ));
        }
        // The chunk's data follows; the next stamp (if the message came in pieces)
        // begins after it. The messages here contain no `[`, so it ends there.
        let (chunk, ended) = read_up_to(stream, message.len() - data.len());
        reply.extend_from_slice(&chunk);
        data.extend_from_slice(&chunk);
        if let Some(why) = ended {
            return Err(format!(
                "sent {}, got {} ({why})",
                quoted(message),
                quoted(&reply)
            ));
        }
    }
    expect_same("the stamped reply's data", message, &data, message)
}

fn stamp_message(target: &Target) -> Result<(), String> {
    expect_stamped(&mut connect(target)?, b"hello")
}

fn stamp_binary(target: &Target) -> Result<(), String> {
    expect_stamped(&mut connect(target)?, b"\x00\xff\xfe not UTF-8 \x01")
}

fn stamp_stays_open(target: &Target) -> Result<(), String> {
    let mut stream = connect(target)?;
    expect_stamped(&mut stream, b"one")?;
    expect_stamped(&mut stream, b"two")
        .map_err(|why| format!("on the same connection, after a first reply: {why}"))
}

fn stamp_clients_in_turn(target: &Target) -> Result<(), String> {
    for index in 0..3 {
        let mut stream = connect(target)?;
        expect_stamped(&mut stream, format!("client {index}").as_bytes())
            .map_err(|why| format!("client {index} of 3, one after another: {why}"))?;
    }
    Ok(())
}

// Lesson 02: each chunk echoed, then `\nI get it!\n`; after the half-close the server closes.

pub(crate) static SOCKET_OPTIONS: &[Check] = &[
    Check {
        name: "i-get-it-message",
        about: "a message, then a half-close: the message and `\\nI get it!\\n` back, then close",
        run: i_get_it_message,
    },
    Check {
        name: "i-get-it-binary",
        about: "bytes that are not text are echoed unchanged before `\\nI get it!\\n`",
        run: i_get_it_binary,
    },
    Check {
        name: "i-get-it-large",
        about: "256 KiB, in as many chunks as TCP likes: each chunk echoed and followed by `\\nI get it!\\n`",
        run: i_get_it_large,
    },
];

const I_GET_IT: &[u8] = b"\nI get it!\n";

fn exchange_i_get_it(target: &Target, message: &[u8]) -> Result<(), String> {
    let mut stream = connect(target)?;
    let reply = std::thread::scope(|scope| {
        let mut writer = stream
            .try_clone()
            .map_err(|err| format!("cannot clone the socket: {err}"))?;
        let sending = scope.spawn(move || {
            send(&mut writer, message)?;
            half_close(&writer)
        });
        let reply = read_to_close(&mut stream, 2 * message.len() + 1024 * I_GET_IT.len());
        let sent = sending
            .join()
            .unwrap_or_else(|_| Err("the sending thread panicked".into()));
        sent.and(reply)
    })?;
    // The reply is chunk, `\nI get it!\n`, chunk, `\nI get it!\n`...: the messages
    // sent here never contain the suffix, so splitting at it finds the chunks.
    if !reply.ends_with(I_GET_IT) {
        return Err(format!(
            "sent {} and half-closed: the reply should end with {}, got {}",
            quoted(message),
            quoted(I_GET_IT),
            quoted(&reply[reply.len().saturating_sub(60)..])
        ));
    }
    let mut data = Vec::new();
    let mut rest = &reply[..];
    while !rest.is_empty() {
        let at = rest
            .windows(I_GET_IT.len())
            .position(|window| window == I_GET_IT)
            .unwrap_or(rest.len());
        data.extend_from_slice(&rest[..at]);
        rest = &rest[(at + I_GET_IT.len()).min(rest.len())..];
    }
    expect_same(
        "the chunks echoed before each `\\nI get it!\\n`",
        message,
        &data,
        message,
    )
}

fn i_get_it_message(target: &Target) -> Result<(), String> {
    exchange_i_get_it(target, b"hello")
}

fn i_get_it_binary(target: &Target) -> Result<(), String> {
    exchange_i_get_it(target, b"\x00\xff\xfe\x01 bin")
}

fn i_get_it_large(target: &Target) -> Result<(), String> {
    let message: Vec<u8> = (0..256 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    exchange_i_get_it(target, &message)
}

// Lesson 03: any datagram gets exactly 4 bytes, the Unix time, u32 big-endian.

pub(crate) static UDP_TIME: &[Check] = &[
    Check {
        name: "time-empty-datagram",
        about: "an empty datagram gets exactly 4 bytes: the Unix time, big-endian",
        run: time_empty,
    },
    Check {
        name: "time-any-datagram",
        about: "a datagram of 1,000 bytes gets the same 4-byte answer",
        run: time_any,
    },
    Check {
        name: "time-many-clients",
        about: "5 sockets ask in turn; each gets its own answer",
        run: time_many,
    },
];

/// How far the server's clock may be from ours.
const CLOCK_SLACK: u64 = 300;

fn ask_time(target: &Target, request: &[u8]) -> Result<(), String> {
    let local = if target.addr.is_ipv4() {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    };
    let socket =
        UdpSocket::bind(local).map_err(|err| format!("cannot bind a UDP socket: {err}"))?;
    socket
        .connect(target.addr)
        .map_err(|err| format!("cannot connect the UDP socket: {err}"))?;
    // UDP may lose the request or the answer: three tries, each with a timeout.
    let per_try = (target.timeout / 3).max(Duration::from_millis(200));
    socket
        .set_read_timeout(Some(per_try))
        .map_err(|err| format!("cannot set a timeout: {err}"))?;
    let mut buffer = [0u8; 65_536];
    for _ in 0..3 {
        socket
            .send(request)
            .map_err(|err| format!("sending a datagram of {} bytes: {err}", request.len()))?;
        let n = match socket.recv(&mut buffer) {
            Ok(n) => n,
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(format!(
                    "no UDP server at {} (ICMP port unreachable)",
                    target.addr
                ));
            }
            Err(_) => continue,
        };
        let reply = &buffer[..n];
        let Ok(bytes) = <[u8; 4]>::try_from(reply) else {
            return Err(format!(
                "sent a datagram of {} bytes, expected exactly 4 bytes back, got {} bytes: {}",
                request.len(),
                n,
                quoted(reply)
            ));
        };
        let theirs = u64::from(u32::from_be_bytes(bytes));
        let ours = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if theirs.abs_diff(ours) > CLOCK_SLACK {
            return Err(format!(
                "the answer {} reads as Unix time {theirs}, ours is {ours}: more than \
                 {CLOCK_SLACK} s apart (big-endian? seconds, not milliseconds?)",
                quoted(reply)
            ));
        }
        return Ok(());
    }
    Err(format!(
        "no answer to 3 datagrams of {} bytes, {per_try:?} each",
        request.len()
    ))
}

fn time_empty(target: &Target) -> Result<(), String> {
    ask_time(target, b"")
}

fn time_any(target: &Target) -> Result<(), String> {
    ask_time(target, &[b'?'; 1000])
}

fn time_many(target: &Target) -> Result<(), String> {
    for index in 0..5 {
        ask_time(target, format!("client {index}").as_bytes())
            .map_err(|why| format!("client {index} of 5: {why}"))?;
    }
    Ok(())
}

// Lesson 09: a header block ending `\r\n\r\n` (at most 65,536 bytes) gets
// `<ctime>\r\n`, then the server closes; bytes after the block are ignored.

pub(crate) static FRAMING: &[Check] = &[
    Check {
        name: "framing-request",
        about: "a header block gets one `<ctime>\\r\\n` line, then the server closes",
        run: framing_request,
    },
    Check {
        name: "framing-single-bytes",
        about: "the same block sent one byte per write gets the same answer",
        run: framing_single_bytes,
    },
    Check {
        name: "framing-bytes-after-ignored",
        about: "bytes after the block (a second request) get no second answer",
        run: framing_bytes_after,
    },
    Check {
        name: "framing-at-the-limit",
        about: "a block of exactly 65,536 bytes, terminator included, is answered",
        run: framing_at_limit,
    },
    Check {
        name: "framing-too-large",
        about: "65,537 bytes without a terminator: closed without an answer",
        run: framing_too_large,
    },
];

const REQUEST: &[u8] = b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n";

/// Sends `pieces` in turn, then reads until the server closes; expects one time line.
fn expect_time_line(target: &Target, pieces: &[&[u8]]) -> Result<(), String> {
    let mut stream = connect(target)?;
    let _ = stream.set_nodelay(true);
    for piece in pieces {
        send(&mut stream, piece)?;
    }
    let reply = read_to_close(&mut stream, 1024)?;
    let sent: Vec<u8> = pieces.concat();
    let text = String::from_utf8_lossy(&reply);
    match text.strip_suffix("\r\n") {
        Some(time) if is_ctime(time) => Ok(()),
        _ => Err(format!(
            "sent {}, expected one line `<ctime>\\r\\n` (26 bytes) and a close, got {}",
            quoted(&sent),
            quoted(&reply)
        )),
    }
}

fn framing_request(target: &Target) -> Result<(), String> {
    expect_time_line(target, &[REQUEST])
}

fn framing_single_bytes(target: &Target) -> Result<(), String> {
    let pieces: Vec<&[u8]> = REQUEST.chunks(1).collect();
    expect_time_line(target, &pieces)
}

fn framing_bytes_after(target: &Target) -> Result<(), String> {
    let twice = [REQUEST, REQUEST].concat();
    expect_time_line(target, &[&twice])
}

fn framing_at_limit(target: &Target) -> Result<(), String> {
    let mut block = b"GET / HTTP/1.0\r\nX-Padding: ".to_vec();
    block.resize(65_536 - 4, b'p');
    block.extend_from_slice(b"\r\n\r\n");
    expect_time_line(target, &[&block])
}

fn framing_too_large(target: &Target) -> Result<(), String> {
    let mut stream = connect(target)?;
    let block = vec![b'x'; 65_537];
    // The server may close (or reset) while we are still sending: that is allowed.
    let _ = send(&mut stream, &block);
    match read_to_close(&mut stream, 1024) {
        Ok(reply) if reply.is_empty() => Ok(()),
        Err(why) if why.contains("reset") && why.contains("after 0 bytes") => Ok(()),
        Ok(reply) => Err(format!(
            "sent 65,537 bytes without `\\r\\n\\r\\n`: expected a close without an answer, got {}",
            quoted(&reply)
        )),
        Err(why) => Err(format!("sent 65,537 bytes without `\\r\\n\\r\\n`: {why}")),
    }
}

// Lesson 10 (TCP): one `<ctime>\r\n` per `\r\n` received, even split across chunks;
// open until the client closes.

pub(crate) static SOCKETSERVER: &[Check] = &[
    Check {
        name: "lines-one",
        about: "a line ending `\\r\\n` gets one `<ctime>\\r\\n`",
        run: lines_one,
    },
    Check {
        name: "lines-split-line-end",
        about: "`\\r` and `\\n` in separate writes still make one line end",
        run: lines_split,
    },
    Check {
        name: "lines-two-in-one-write",
        about: "two line ends in one write get two answers",
        run: lines_two,
    },
    Check {
        name: "lines-wait-for-line-end",
        about: "no answer before the line end; none extra after a half-close",
        run: lines_wait,
    },
];

/// Sends `pieces`, half-closes, reads to the close; expects `lines` time lines.
fn expect_time_lines(target: &Target, pieces: &[&[u8]], lines: usize) -> Result<(), String> {
    let mut stream = connect(target)?;
    let _ = stream.set_nodelay(true);
    for piece in pieces {
        send(&mut stream, piece)?;
    }
    half_close(&stream)?;
    let reply = read_to_close(&mut stream, 1024)?;
    let text = String::from_utf8_lossy(&reply);
    let answers: Vec<&str> = text.split_terminator("\r\n").collect();
    if reply.ends_with(b"\r\n") && answers.len() == lines && answers.iter().all(|a| is_ctime(a)) {
        return Ok(());
    }
    Err(format!(
        "sent {} then half-closed: expected {lines} line(s) `<ctime>\\r\\n`, got {}",
        quoted(&pieces.concat()),
        quoted(&reply)
    ))
}

fn lines_one(target: &Target) -> Result<(), String> {
    expect_time_lines(target, &[b"what time is it?\r\n"], 1)
}

fn lines_split(target: &Target) -> Result<(), String> {
    let mut stream = connect(target)?;
    let _ = stream.set_nodelay(true);
    send(&mut stream, b"split\r")?;
    // A pause so that the two writes usually reach the server as two reads. It is
    // not a wait for readiness: a server that reads both at once passes as well.
    std::thread::sleep(Duration::from_millis(50));
    send(&mut stream, b"\n")?;
    let (reply, ended) = read_up_to(&mut stream, 26);
    let text = String::from_utf8_lossy(&reply);
    match text.strip_suffix("\r\n") {
        Some(time) if is_ctime(time) => Ok(()),
        _ => Err(format!(
            "sent \"split\\r\" then \"\\n\": expected `<ctime>\\r\\n`, got {}{}",
            quoted(&reply),
            ended.map(|why| format!(" ({why})")).unwrap_or_default()
        )),
    }
}

fn lines_two(target: &Target) -> Result<(), String> {
    expect_time_lines(target, &[b"one\r\ntwo\r\n"], 2)
}

fn lines_wait(target: &Target) -> Result<(), String> {
    expect_time_lines(target, &[b"no line end yet", b" ... now\r\n", b"tail"], 1)
}
