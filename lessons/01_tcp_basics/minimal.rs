//! Lesson 01, the first version: the timestamp server in the shape of the Python
//! tutorials (socket, bind, listen, then accept and recv/send in a loop), and no more.
//! Chapter 01 runs it, shows what breaks, and grows it into server.rs step by step.
//!
//!   cargo run --bin 01_tcp_basics_minimal -- --port 21567

use std::io::{Read, Write};
use std::net::TcpListener;

use workbook::cli::Cli;
use workbook::time::ctime_now;

// ANCHOR: all
fn main() -> std::io::Result<()> {
    let args = Cli::new("01_tcp_basics_minimal", "Lesson 01, first version.", 21567).parse();
    // socket + bind + listen in one call (std sets SO_REUSEADDR and a backlog of 128).
    let listener = TcpListener::bind((args.host.as_str(), args.port))?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        // accept(2): wait for the next client. One at a time.
        let (mut conn, addr) = listener.accept()?;
        println!("connected {addr}");
        let mut buffer = [0u8; 4096];
        loop {
            // recv(2): 0 bytes means the client closed.
            let n = conn.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            let mut reply = format!("[{}] ", ctime_now()).into_bytes();
            reply.extend_from_slice(&buffer[..n]);
            // send(2), like Python's `conn.send`: it returns how much it sent, and
            // this version does not look.
            let _sent = conn.write(&reply)?;
        }
        println!("disconnected {addr}");
    }
}
// ANCHOR_END: all
