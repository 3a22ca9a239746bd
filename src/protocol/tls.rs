//! The protocol of lesson 14: TLS (1.3 and 1.2) with a certificate that a given CA
//! vouches for, then echo; close_notify answered with close_notify; a client that
//! does not speak TLS, is idle, or resets does not stop the server.
//!
//! The checks need to know whom to trust: [`super::TlsTarget`] (`check 14 --ca FILE`).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use rustls::{ClientConfig, ClientConnection, StreamOwned};
use socket2::SockRef;

use super::{Check, Target, connect, expect_same, quoted, read_to_close, send};

pub(crate) static TLS: &[Check] = &[
    Check {
        name: "tls13-echo",
        about: "a TLS 1.3 handshake verifies against the CA and name; a line comes back",
        run: tls13_echo,
    },
    Check {
        name: "tls12-echo",
        about: "a TLS 1.2 handshake verifies too; a line comes back",
        run: tls12_echo,
    },
    Check {
        name: "tls-binary",
        about: "all 256 byte values come back unchanged through TLS",
        run: binary,
    },
    Check {
        name: "tls-large",
        about: "4 MiB in 64 KiB pieces, each echoed before the next, come back unchanged",
        run: large,
    },
    Check {
        name: "tls-many-clients",
        about: "20 sessions send before any reads; each gets its own echo",
        run: many_clients,
    },
    Check {
        name: "tls-close-notify",
        about: "after the echo, our close_notify is answered with the server's, then EOF",
        run: close_notify,
    },
    Check {
        name: "tls-not-tls",
        about: "plain text instead of a ClientHello is not echoed, and TLS clients are still served",
        run: not_tls,
    },
    Check {
        name: "tls-idle-client",
        about: "a TCP client that never starts its handshake does not delay a TLS client",
        run: idle_client,
    },
    Check {
        name: "tls-after-reset",
        about: "a client that resets mid-session does not stop the server",
        run: after_reset,
    },
];

type Session = StreamOwned<ClientConnection, TcpStream>;

fn trust(target: &Target) -> Result<&super::TlsTarget, String> {
    target.tls.as_ref().ok_or_else(|| {
        "a TLS check needs the CA that signed the server's certificate: \
         give --ca FILE (and --server-name if not localhost)"
            .to_string()
    })
}

fn config(target: &Target, tls12_only: bool) -> Result<Arc<ClientConfig>, String> {
    let tls = trust(target)?;
    let config = crate::tls::client_config(&tls.ca)?;
    if !tls12_only {
        return Ok(config);
    }
    // The same trust, with only TLS 1.2 offered.
    let mut roots = rustls::RootCertStore::empty();
    for certificate in crate::tls::load_certificates(&tls.ca)? {
        roots
            .add(certificate)
            .map_err(|err| format!("{}: {err}", tls.ca.display()))?;
    }
    let config = ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A verified session with the target: TCP connect, then the whole handshake.
fn open(target: &Target, tls12_only: bool) -> Result<Session, String> {
    let config = config(target, tls12_only)?;
    let tls = trust(target)?;
    let name = crate::tls::server_name(&tls.server_name)?;
    let mut connection =
        ClientConnection::new(config, name).map_err(|err| format!("cannot start TLS: {err}"))?;
    let mut stream = connect(target)?;
    while connection.is_handshaking() {
        connection.complete_io(&mut stream).map_err(|err| {
            format!(
                "TLS handshake: {}",
                crate::tls::explain(&err, &tls.ca, &tls.server_name, &[])
            )
        })?;
    }
    Ok(StreamOwned::new(connection, stream))
}

fn write(session: &mut Session, data: &[u8]) -> Result<(), String> {
    session
        .write_all(data)
        .and_then(|()| session.flush())
        .map_err(|err| format!("sending {} over TLS: {err}", quoted(data)))
}

/// Reads exactly `want.len()` bytes of plaintext and compares them with `want`.
fn expect(session: &mut Session, what: &str, want: &[u8]) -> Result<(), String> {
    let mut got = vec![0u8; want.len()];
    let mut filled = 0;
    while filled < want.len() {
        match session.read(&mut got[filled..]) {
            Ok(0) => {
                return Err(format!(
                    "{what}: sent {}, the server ended the session after {} ({filled} bytes)",
                    quoted(want),
                    quoted(&got[..filled])
                ));
            }
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                return Err(format!(
                    "{what}: sent {}, got {} then: {}",
                    quoted(want),
                    quoted(&got[..filled]),
                    read_failure(&err)
                ));
            }
        }
    }
    expect_same(what, want, &got, want)
}

fn read_failure(err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            "nothing more came before the timeout".into()
        }
        io::ErrorKind::UnexpectedEof => "the server closed without close_notify".into(),
        _ => format!("{err}"),
    }
}

/// Ends a session politely: close_notify, so the server does not log a truncation.
fn close(mut session: Session) {
    session.conn.send_close_notify();
    let _ = session.flush();
}

fn echo_line(tls12_only: bool, what: &str, target: &Target) -> Result<(), String> {
    let mut session = open(target, tls12_only)?;
    let message = b"hello, TLS\n";
    write(&mut session, message)?;
    expect(&mut session, what, message)?;
    close(session);
    Ok(())
}

fn tls13_echo(target: &Target) -> Result<(), String> {
    echo_line(false, "the echo over TLS 1.3", target)
}

fn tls12_echo(target: &Target) -> Result<(), String> {
    echo_line(true, "the echo over TLS 1.2", target)
}

fn binary(target: &Target) -> Result<(), String> {
    let mut session = open(target, false)?;
    let message: Vec<u8> = (0..=255u8).rev().collect();
    write(&mut session, &message)?;
    expect(&mut session, "the echo of 256 byte values", &message)?;
    close(session);
    Ok(())
}

fn large(target: &Target) -> Result<(), String> {
    let mut session = open(target, false)?;
    let payload: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    for (index, piece) in payload.chunks(64 * 1024).enumerate() {
        write(&mut session, piece)?;
        expect(
            &mut session,
            &format!("the echo of 64 KiB piece {index} of 64"),
            piece,
        )?;
    }
    close(session);
    Ok(())
}

fn many_clients(target: &Target) -> Result<(), String> {
    let mut sessions = Vec::new();
    for _ in 0..20 {
        sessions.push(open(target, false)?);
    }
    for (index, session) in sessions.iter_mut().enumerate() {
        write(session, format!("message from client {index}\n").as_bytes())?;
    }
    for (index, session) in sessions.iter_mut().enumerate() {
        let message = format!("message from client {index}\n");
        expect(
            session,
            &format!("client {index} of 20"),
            message.as_bytes(),
        )?;
    }
    sessions.into_iter().for_each(close);
    Ok(())
}

fn close_notify(target: &Target) -> Result<(), String> {
    let mut session = open(target, false)?;
    let message = b"the last words before close_notify\n";
    write(&mut session, message)?;
    session.conn.send_close_notify();
    session
        .flush()
        .map_err(|err| format!("sending close_notify: {err}"))?;
    expect(&mut session, "the echo before close_notify", message)?;
    let mut rest = [0u8; 64];
    match session.read(&mut rest) {
        Ok(0) => Ok(()),
        Ok(n) => Err(format!(
            "after our close_notify, expected the server's close_notify, got {}",
            quoted(&rest[..n])
        )),
        Err(err) => Err(format!(
            "after our close_notify, expected the server's close_notify: {}",
            read_failure(&err)
        )),
    }
}

fn not_tls(target: &Target) -> Result<(), String> {
    let mut plain = connect(target)?;
    let garbage = b"hello, plain TCP, no TLS here\r\n\r\n";
    send(&mut plain, garbage)?;
    // The server may close at once, or send a TLS alert first, or reset (close(2)
    // with unread bytes sends RST); never the plaintext back, and it closes.
    let got = match read_to_close(&mut plain, 1024) {
        Ok(got) => got,
        Err(why) if why.starts_with("the server reset") => Vec::new(),
        Err(why) => return Err(format!("after plain text instead of a ClientHello: {why}")),
    };
    if got.windows(5).any(|w| w == b"hello") {
        return Err(format!(
            "sent plain text {}, it came back as plain text: {}",
            quoted(garbage),
            quoted(&got)
        ));
    }
    echo_line(false, "the echo after a client that was not TLS", target)
}

fn idle_client(target: &Target) -> Result<(), String> {
    let _idle = connect(target)?;
    echo_line(false, "the echo beside an idle TCP client", target)
        .map_err(|why| format!("{why} (with another client connected and silent)"))
}

fn after_reset(target: &Target) -> Result<(), String> {
    let mut doomed = open(target, false)?;
    write(&mut doomed, b"half a mess")?;
    // SO_LINGER 0: close(2) sends a reset (RST) instead of a FIN.
    let socket = doomed.into_parts().1;
    SockRef::from(&socket)
        .set_linger(Some(std::time::Duration::ZERO))
        .map_err(|err| format!("cannot set SO_LINGER: {err}"))?;
    drop(socket);
    echo_line(false, "the echo after another client's reset", target)
}
