//! Lesson 08, the first version: an echo server on epoll in the fewest lines, the
//! shape of Python's `selectors` example (register the listener, wait, dispatch on
//! the key), and no more. Chapter 08 runs it, shows what breaks, and grows it into
//! the reactor of server.rs and reactor.rs.
//!
//!   cargo run --bin 08_event_loop_minimal -- --port 10008

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use workbook::cli::Cli;

// ANCHOR: all
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Cli::new("08_event_loop_minimal", "Lesson 08, first version.", 10008).parse();
    let listener = TcpListener::bind((args.host.as_str(), args.port))?;
    println!("listening on {}", listener.local_addr()?);
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    // The key of each registration is the descriptor's number.
    let listener_key = listener.as_raw_fd() as u64;
    epoll.add(
        &listener,
        EpollEvent::new(EpollFlags::EPOLLIN, listener_key),
    )?;
    let mut clients: HashMap<RawFd, TcpStream> = HashMap::new();
    let mut events = [EpollEvent::empty(); 64];
    loop {
        // epoll_wait(2): only the ready descriptors come back, however many are idle.
        let n = epoll.wait(&mut events, EpollTimeout::NONE)?;
        for event in &events[..n] {
            if event.data() == listener_key {
                let (client, addr) = listener.accept()?;
                println!("connected {addr}");
                epoll.add(
                    &client,
                    EpollEvent::new(EpollFlags::EPOLLIN, client.as_raw_fd() as u64),
                )?;
                clients.insert(client.as_raw_fd(), client);
                continue;
            }
            let fd = event.data() as RawFd;
            let Some(client) = clients.get_mut(&fd) else {
                continue;
            };
            let mut buffer = [0u8; 4096];
            let n = client.read(&mut buffer)?;
            if n == 0 {
                println!("disconnected");
                // Closing the socket also removes it from the epoll set.
                clients.remove(&fd);
            } else {
                client.write_all(&buffer[..n])?;
            }
        }
    }
}
// ANCHOR_END: all
