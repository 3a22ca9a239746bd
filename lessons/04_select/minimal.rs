//! Lesson 04, the first version: the echo server in the shape of the Python
//! tutorials' select loop (a list of sockets, select, accept or recv/send), and no
//! more. Chapter 04 runs it, shows what breaks, and grows it into server.rs.
//!
//!   cargo run --bin 04_select_minimal -- --port 10001

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;

use nix::sys::select::{FdSet, select};
use workbook::cli::Cli;

// ANCHOR: all
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Cli::new("04_select_minimal", "Lesson 04, first version.", 10001).parse();
    let listener = TcpListener::bind((args.host.as_str(), args.port))?;
    println!("listening on {}", listener.local_addr()?);
    let mut clients: Vec<TcpStream> = Vec::new();
    loop {
        // select(2): which of these sockets have something to read?
        let mut readable = FdSet::new();
        readable.insert(listener.as_fd());
        for client in &clients {
            readable.insert(client.as_fd());
        }
        select(None, Some(&mut readable), None, None, None)?;
        let listener_ready = readable.contains(listener.as_fd());
        let ready: Vec<bool> = clients
            .iter()
            .map(|c| readable.contains(c.as_fd()))
            .collect();
        if listener_ready {
            let (client, addr) = listener.accept()?;
            println!("connected {addr}");
            clients.push(client);
        }
        let mut buffer = [0u8; 4096];
        for (index, is_ready) in ready.into_iter().enumerate().rev() {
            if !is_ready {
                continue;
            }
            let n = clients[index].read(&mut buffer)?;
            if n == 0 {
                println!("disconnected");
                clients.remove(index);
            } else {
                // A blocking sendall: waits for as long as this client does not read.
                clients[index].write_all(&buffer[..n])?;
            }
        }
    }
}
// ANCHOR_END: all
