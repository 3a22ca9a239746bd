//! Lesson 08, the client: opens several connections to the event-loop server at once
//! and sends each line on all of them.
//!
//!   cargo run --bin 08_event_loop_client -- --conns 3 hello world
//!
//! The client is the same for every echo lesson; its code is in src/echo_client.rs.

fn main() {
    workbook::echo_client::main(
        "08_event_loop_client",
        "Lesson 08: opens --conns connections to the epoll echo server and sends each \
         line on every one of them.",
        10008,
        "08_event_loop_server",
    );
}
