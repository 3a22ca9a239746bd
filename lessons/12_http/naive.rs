//! `--naive`: the first HTTP server most tutorials show, behaviour for behaviour, so
//! that you can watch what goes wrong before the rest of this lesson fixes it.
//!
//! One client at a time; one `recv` of at most 1024 bytes, whatever the request's
//! size; a status line and an empty line, then `Hello WORD`: no Content-Length, and
//! the socket is not closed. The client cannot tell that the body is over: curl waits,
//! and so does a browser, unless its next connection comes first. The connection is
//! closed only when the next client is accepted (in the Python original the variable
//! holding the socket is then bound to the new one, and the old socket object is
//! freed and closed).

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use workbook::signal::WakeOnShutdown;
use workbook::{exit_with_error, log, show};

use crate::pages::HELLO;

// ANCHOR: naive
pub fn serve(listener: &TcpListener, quiet: bool) {
    // Ctrl-C shuts down the listener and the client being served (lesson 01's way),
    // which wakes this thread wherever it blocks.
    let wake =
        WakeOnShutdown::install(listener).unwrap_or_else(|message| exit_with_error(&message));
    if let Ok(addr) = listener.local_addr() {
        log::listening(addr);
    }
    let mut previous: Option<Arc<TcpStream>> = None;
    let mut served = 0;
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => Arc::new(stream),
            Err(_) if wake.stopping() => break,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                log!("{} accept: {err}", log::ERROR);
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        // Only now is the previous client's connection closed.
        previous.take();
        if !wake.client_arrived(&stream) {
            break;
        }
        let peers = show::peers(&*stream);
        if !quiet {
            log!("{} {peers}", log::CONNECTED);
        }
        // One read, as if a request always came in one piece and never passed 1 KiB.
        let mut request = [0u8; 1024];
        let n = (&*stream).read(&mut request).unwrap_or(0);
        if wake.stopping() {
            break;
        }
        if !quiet {
            let data = show::bytes(&request[..n]);
            log!(
                "{} {} from {peers}: {data}",
                log::RECEIVED,
                show::count(n, "byte")
            );
        }
        // The reply. Nothing says how long the body is, and nothing ends it.
        let _ = (&*stream).write_all(b"HTTP/1.1 200 OK\r\n\r\n");
        let _ = (&*stream).write_all(HELLO.as_bytes());
        wake.client_left();
        previous = Some(stream);
        served += 1;
    }
    log::last_line(format!(
        "{}: served {}",
        log::SHUTTING_DOWN,
        show::count(served, "client")
    ));
}
// ANCHOR_END: naive
