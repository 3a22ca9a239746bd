//! The reference point of the measurements: the least a single-threaded echo server
//! on epoll can do. One read buffer for everything, the echo written straight from it,
//! level-triggered, no framework, and no log but its first and last lines. It keeps
//! just enough of the rules to be correct: non-blocking sockets, a partial write keeps
//! its rest (and stops reading that client until it is sent), resets close one
//! connection, Ctrl-C stops the loop, and its two lines go through `workbook::log`,
//! so that a closed or stalled stdout cannot stop it.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use workbook::cli::Args;
use workbook::listener::{self, Accept};
use workbook::{exit_with_error, log, show, signal};

const LISTENER: u64 = u64::MAX;
const WAKE_UP: u64 = u64::MAX - 1;
/// listen(2)'s backlog: 128, what std's `TcpListener::bind` asks for.
const BACKLOG: i32 = 128;

struct Client {
    stream: TcpStream,
    /// Echo that did not fit in the send buffer: sent before anything more is read.
    unsent: Vec<u8>,
}

pub fn serve(args: &Args) {
    let addr = args
        .socket_addr()
        .unwrap_or_else(|message| exit_with_error(&message));
    let listener = listener::open(addr, BACKLOG, Accept::NonBlocking);
    let wakeup = signal::shutdown_wakeup().unwrap_or_else(|message| exit_with_error(&message));
    let setup = || -> io::Result<Epoll> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(&listener, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))?;
        epoll.add(&wakeup, EpollEvent::new(EpollFlags::EPOLLIN, WAKE_UP))?;
        Ok(epoll)
    };
    let epoll =
        setup().unwrap_or_else(|err| exit_with_error(&format!("cannot set up epoll: {err}")));
    let bound = listener.local_addr().unwrap_or(addr);
    log::listening(bound);

    let mut clients: HashMap<u64, Client> = HashMap::new();
    let mut events = vec![EpollEvent::empty(); 1024];
    let mut buffer = vec![0u8; 64 * 1024];
    let mut served = 0usize;
    'run: loop {
        let ready = match epoll.wait(&mut events, EpollTimeout::NONE) {
            Ok(ready) => ready,
            Err(Errno::EINTR) => continue,
            Err(err) => {
                log!("{} epoll_wait: {err}", log::ERROR);
                break;
            }
        };
        for event in &events[..ready] {
            match event.data() {
                WAKE_UP => break 'run,
                LISTENER => loop {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let token = stream.as_raw_fd() as u64;
                            let added = stream.set_nonblocking(true).and_then(|()| {
                                epoll
                                    .add(&stream, EpollEvent::new(EpollFlags::EPOLLIN, token))
                                    .map_err(io::Error::from)
                            });
                            if added.is_ok() {
                                served += 1;
                                clients.insert(
                                    token,
                                    Client {
                                        stream,
                                        unsent: Vec::new(),
                                    },
                                );
                            }
                        }
                        Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                        // EMFILE and the like: the listener stays ready, so trying again
                        // at once would spin. The reference server keeps it simple and
                        // pauses; lesson 05 shows the better ways.
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(10));
                            break;
                        }
                    }
                },
                token => {
                    let Some(client) = clients.get_mut(&token) else {
                        continue;
                    };
                    if !pump(client, &mut buffer, &epoll, token) {
                        if let Some(client) = clients.remove(&token) {
                            let _ = epoll.delete(client.stream.as_fd());
                        }
                    }
                }
            }
        }
    }
    log::last_line(format!(
        "{}: served {}, closed {} still open",
        log::SHUTTING_DOWN,
        show::count(served, "client"),
        clients.len()
    ));
}

/// Echoes what can be echoed; false when the connection is finished.
fn pump(client: &mut Client, buffer: &mut [u8], epoll: &Epoll, token: u64) -> bool {
    if !client.unsent.is_empty() {
        match write_some(&mut client.stream, &client.unsent) {
            Ok(n) => {
                client.unsent.drain(..n);
            }
            Err(_) => return false,
        }
        if client.unsent.is_empty() {
            // Everything sent: back to reading.
            let mut event = EpollEvent::new(EpollFlags::EPOLLIN, token);
            return epoll.modify(client.stream.as_fd(), &mut event).is_ok();
        }
        return true;
    }
    let n = match client.stream.read(buffer) {
        Ok(0) => return false,
        Ok(n) => n,
        Err(err)
            if matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            return true;
        }
        Err(_) => return false,
    };
    match write_some(&mut client.stream, &buffer[..n]) {
        Ok(written) if written == n => true,
        Ok(written) => {
            // The send buffer is full: keep the rest, wait for room, stop reading.
            client.unsent.extend_from_slice(&buffer[written..n]);
            let mut event = EpollEvent::new(EpollFlags::EPOLLOUT, token);
            epoll.modify(client.stream.as_fd(), &mut event).is_ok()
        }
        Err(_) => false,
    }
}

/// Writes as much as the socket takes; WouldBlock counts as 0 bytes.
fn write_some(stream: &mut TcpStream, data: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < data.len() {
        match stream.write(&data[written..]) {
            Ok(n) => written += n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        }
    }
    Ok(written)
}
