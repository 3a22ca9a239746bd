//! Lesson 05, the client: opens several connections to the poll server at once and
//! sends each line on all of them, so you can watch one server thread serve them all.
//!
//!   cargo run --bin 05_poll_client -- --conns 3 hello world
//!   cargo run --bin 05_poll_client -- --hold 30     # idle connections (another terminal)
//!
//! The client is the same for every echo lesson; its code is in src/echo_client.rs.

fn main() {
    workbook::echo_client::main(
        "05_poll_client",
        "Lesson 05: opens --conns connections to the poll echo server and sends each \
         line on every one of them.",
        8009,
        "05_poll_server",
    );
}
