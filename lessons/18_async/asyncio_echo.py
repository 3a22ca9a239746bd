"""Lesson 18's echo server in Python's asyncio, for the chapter's side-by-side with
server.rs: a coroutine per connection, a bounded buffer, an accept loop run by the
event loop, Ctrl-C/SIGTERM through the loop (a self-pipe, as in Rust), in-flight
connections cancelled. It passes `cargo run -- check 18` (tests/18_async.rs runs it).

    python3 lessons/18_async/asyncio_echo.py [--port PORT] [--quiet]
"""
import asyncio
import signal
import sys

READ_SIZE = 16 * 1024
GRACE = 0.5


# ANCHOR: echo
async def echo(reader, writer, quiet):
    peer = writer.get_extra_info("peername")
    try:
        while True:
            data = await reader.read(READ_SIZE)  # at most READ_SIZE bytes
            if not data:  # the client closed or half-closed
                break
            if not quiet:
                print(f"received {len(data)} bytes from {peer}", flush=True)
            writer.write(data)  # queued in the transport...
            await writer.drain()  # ...and wait while it is over the high-water mark
    except (ConnectionError, asyncio.CancelledError):
        pass  # a reset, or cancelled by the shutdown below
    finally:
        writer.close()
# ANCHOR_END: echo


# ANCHOR: main
async def main(port, quiet):
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Not a signal handler: the loop's own wake-up pipe calls it, in the loop.
        loop.add_signal_handler(signum, stop.set)
    tasks = set()

    async def connected(reader, writer):  # start_server runs it as a task
        task = asyncio.current_task()
        tasks.add(task)
        try:
            await echo(reader, writer, quiet)
        finally:
            tasks.discard(task)

    server = await asyncio.start_server(connected, "127.0.0.1", port, backlog=1024)
    host, bound = server.sockets[0].getsockname()[:2]
    print(f"listening on {host}:{bound}", flush=True)
    await stop.wait()
    server.close()  # stop accepting
    open_now = len(tasks)
    for task in list(tasks):
        task.cancel()  # CancelledError at its next await
    if tasks:
        await asyncio.wait(list(tasks), timeout=GRACE)
    print(f"shutting down (signal): closed {open_now} connections still open", flush=True)
# ANCHOR_END: main


if __name__ == "__main__":
    args = sys.argv[1:]
    port = int(args[args.index("--port") + 1]) if "--port" in args else 10018
    asyncio.run(main(port, "--quiet" in args))
