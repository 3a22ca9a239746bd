//! `--tls CA` (lesson 14's server), and `--new-connection-per-request` with the echo:
//! one connection slot per thread, in blocking calls, so that the handshake's cost is
//! easy to see. Each round trip writes the message in pieces of at most 16 KiB and
//! reads each piece's echo before the next (one `ClientConnection` cannot be read and
//! written on two threads at once; lesson 14's client does the same).
//!
//! With `--new-connection-per-request` every request is connect, (handshake,) one
//! echo, (close_notify,) close: its rate is connections (handshakes) per second.
//! Without it a slot keeps one connection (one session) for all its requests.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use super::{Load, Outcome, message, unanswered_at_the_end, wrong_reply};

/// What a slot's connections speak.
#[derive(Clone)]
pub enum Transport {
    Plain,
    /// TLS, verifying the server against these roots, for this name.
    Tls(Arc<ClientConfig>, ServerName<'static>),
}

/// A connection of either kind, read and written the same way.
enum Link {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Link {
    /// Connects (and shakes hands), each blocking call waiting `limit` at most.
    fn open(addr: SocketAddr, transport: &Transport, limit: Duration) -> io::Result<Link> {
        // connect(2) with a time limit: an unanswered SYN is retried for minutes.
        let stream = TcpStream::connect_timeout(&addr, limit)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(limit))?;
        stream.set_write_timeout(Some(limit))?;
        match transport {
            Transport::Plain => Ok(Link::Plain(stream)),
            Transport::Tls(config, name) => {
                let mut tls = ClientConnection::new(Arc::clone(config), name.clone())
                    .map_err(io::Error::other)?;
                let mut stream = stream;
                while tls.is_handshaking() {
                    tls.complete_io(&mut stream)?;
                }
                Ok(Link::Tls(Box::new(StreamOwned::new(tls, stream))))
            }
        }
    }

    /// Each blocking call may wait `limit` at most: `STALL`, or less near the end of
    /// the grace after `--duration`.
    fn wait_at_most(&self, limit: Duration) -> io::Result<()> {
        let stream = match self {
            Link::Plain(stream) => stream,
            Link::Tls(session) => session.get_ref(),
        };
        stream.set_read_timeout(Some(limit))?;
        stream.set_write_timeout(Some(limit))
    }

    fn io(&mut self) -> &mut dyn ReadWrite {
        match self {
            Link::Plain(stream) => stream,
            Link::Tls(session) => session.as_mut(),
        }
    }

    /// Plain: close(2). TLS: close_notify first, as a polite client does.
    fn close(self) {
        if let Link::Tls(mut session) = self {
            session.conn.send_close_notify();
            let _ = session.flush();
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Runs connection slot `number` until `--requests` or `--duration`.
pub fn drive(
    number: usize,
    addr: SocketAddr,
    transport: &Transport,
    load: &Load,
    new_connection: bool,
) -> Outcome {
    let mut outcome = Outcome::default();
    let mut sent = message(number, load);
    let mut echo = vec![0u8; sent.len()];
    let mut link: Option<Link> = None;
    let mut request: u64 = 0;
    while request < load.requests {
        let started = Instant::now();
        if load.deadline.is_some_and(|deadline| started >= deadline) {
            break;
        }
        // Bytes 0..8: the request's number, so that a stale echo is caught.
        for (slot, byte) in sent.iter_mut().zip(request.to_le_bytes()) {
            *slot = byte;
        }
        let result = match link.take() {
            Some(open) => Ok(open),
            None => Link::open(addr, transport, load.wait_limit(started)),
        }
        .and_then(|mut open| {
            open.wait_at_most(load.wait_limit(Instant::now()))?;
            round_trip(open.io(), &sent, &mut echo, load)?;
            Ok(open)
        });
        match result {
            Ok(open) if new_connection => open.close(),
            Ok(open) => link = Some(open),
            Err(err) if unanswered_at_the_end(&err, load) => {
                outcome.unanswered += 1;
                break;
            }
            Err(err) => {
                outcome
                    .errors
                    .push(format!("conn {number}: request {request}: {err}"));
                break;
            }
        }
        outcome
            .latencies
            .record(started.elapsed().as_nanos() as u64);
        request += 1;
    }
    if let Some(open) = link {
        open.close();
    }
    outcome
}

fn round_trip(io: &mut dyn ReadWrite, sent: &[u8], echo: &mut [u8], load: &Load) -> io::Result<()> {
    for (piece, back) in sent.chunks(16 * 1024).zip(echo.chunks_mut(16 * 1024)) {
        // A big message still on its way at the end of the grace: unanswered.
        if load.grace_end().is_some_and(|end| Instant::now() >= end) {
            return Err(io::ErrorKind::TimedOut.into());
        }
        io.write_all(piece)?;
        io.flush()?;
        // read_exact, with the end of the grace checked between reads: each read has
        // a time limit, but a server that trickles a byte per read would otherwise
        // keep the whole piece going far past the end of the run.
        let mut got = 0;
        while got < back.len() {
            if load.grace_end().is_some_and(|end| Instant::now() >= end) {
                return Err(io::ErrorKind::TimedOut.into());
            }
            match io.read(&mut back[got..]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => got += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
    }
    if echo != sent {
        let at = sent.iter().zip(echo.iter()).position(|(a, b)| a != b);
        return Err(wrong_reply(format!(
            "the echo differs from what was sent at byte {}",
            at.unwrap_or(0)
        )));
    }
    Ok(())
}
