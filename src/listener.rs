//! The listening socket of lessons 04 and up: lessons 01 and 02 taught its four steps
//! (socket, SO_REUSEADDR, bind, listen) one by one; from lesson 04 on a server takes
//! them from here, so that each lesson file shows only what it adds.

use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

use crate::{bind_failed, exit_with_error};

/// Whether `accept(2)` on the listener may block (threads) or must not (event loops).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Accept {
    /// A thread waits in accept(2) until a client comes (lessons 06, 07, 10).
    Blocking,
    /// accept(2) returns `WouldBlock` when the queue is empty (lessons 04, 05, 08, 09):
    /// select/poll/epoll say the listener is readable when a connection is queued,
    /// but the client may reset it before we accept; a blocking accept would then
    /// wait for the next client and freeze every other connection meanwhile.
    NonBlocking,
}

// ANCHOR: open
/// socket(2), SO_REUSEADDR, bind(2), listen(2) with `backlog`, then O_NONBLOCK if
/// asked. Cannot: one `error:` line naming the address and the cause, exit status 1.
pub fn open(addr: SocketAddr, backlog: i32, accept: Accept) -> TcpListener {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .unwrap_or_else(|err| exit_with_error(&format!("cannot create a TCP socket: {err}")));
    // Restart at once after a stop, although the last connections are in TIME_WAIT
    // (lesson 02).
    if let Err(err) = socket.set_reuse_address(true) {
        exit_with_error(&format!("cannot set SO_REUSEADDR: {err}"));
    }
    if let Err(err) = socket.bind(&addr.into()) {
        exit_with_error(&bind_failed(addr, &err));
    }
    // Linux queues up to backlog + 1 completed connections that nobody has accepted
    // yet (and caps backlog at net.core.somaxconn).
    if let Err(err) = socket.listen(backlog) {
        exit_with_error(&format!("cannot listen on {addr}: {err}"));
    }
    if accept == Accept::NonBlocking {
        if let Err(err) = socket.set_nonblocking(true) {
            exit_with_error(&format!("cannot make the listener non-blocking: {err}"));
        }
    }
    TcpListener::from(socket)
}
// ANCHOR_END: open
