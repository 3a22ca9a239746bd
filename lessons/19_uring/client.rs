//! Lesson 19, the client: opens several connections to the io_uring server at once
//! and sends each line on all of them.
//!
//!   cargo run --bin 19_uring_client -- --conns 3 hello world
//!
//! The client is the same for every echo lesson; its code is in src/echo_client.rs.
//! It is plain std on purpose: what this lesson changes is the server's side, and the
//! same client against lessons 05, 08 and 19 shows that the wire does not change.

fn main() {
    workbook::echo_client::main(
        "19_uring_client",
        "Lesson 19: opens --conns connections to the io_uring echo server and sends each \
         line on every one of them.",
        10019,
        "19_uring_server",
    );
}
