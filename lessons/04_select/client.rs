//! Lesson 04, the client: opens several connections to the select server at once and
//! sends each line on all of them, so you can watch one server thread serve them all.
//!
//!   cargo run --bin 04_select_client -- --conns 3 hello world
//!   cargo run --bin 04_select_client -- --hold 30     # idle connections (another terminal)
//!
//! The client is the same for every echo lesson; its code is in src/echo_client.rs.

fn main() {
    workbook::echo_client::main(
        "04_select_client",
        "Lesson 04: opens --conns connections to the select echo server and sends each \
         line on every one of them.",
        10001,
        "04_select_server",
    );
}
