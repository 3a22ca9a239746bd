//! Lesson 06, the client: opens connections to the threaded server, optionally holds
//! them idle first (`--hold SECS`), then sends each line on every one of them.
//!
//!   terminal 2: cargo run --bin 06_threaded_client -- --conns 1 --hold 10 late
//!   terminal 3: cargo run --bin 06_threaded_client -- --conns 1 "served meanwhile"
//!
//! The client is the same for every echo lesson; its code is in src/echo_client.rs.

fn main() {
    workbook::echo_client::main(
        "06_threaded_client",
        "Lesson 06: opens --conns connections to the threaded echo server, holds them \
         idle for --hold seconds, then sends each line on every one of them.",
        8080,
        "06_threaded_server",
    );
}
