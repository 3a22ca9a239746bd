"""Lesson 07 in Python: the same echo server, for a reader who knows Python.

A fixed set of threads, each calling accept() on one shared listening socket
(python3 lessons/07_fixed_threads/pool.py --threads 4), or, with --executor,
one accepting thread that hands each connection to a ThreadPoolExecutor.
Both pass lesson 07's protocol checks (cargo run -- check 07 --port 8081).
It logs only its first line; Ctrl-C stops it.
"""

import argparse
import socket
import threading
from concurrent.futures import ThreadPoolExecutor


# ANCHOR: serve
def serve(conn):
    """Echo one connection to its end. Any error ends this connection only: an
    exception left to escape would end the worker's thread, and the pool would
    be one worker smaller for good (a traceback on stderr is all that says so)."""
    with conn:
        try:
            while data := conn.recv(64 * 1024):  # b"": the client closed
                conn.sendall(data)
        except OSError:
            pass  # reset by the client, and the like
# ANCHOR_END: serve


# ANCHOR: listen_once
def listen(host, port):
    # socket, SO_REUSEADDR, bind, listen(128): once, before any worker exists.
    return socket.create_server((host, port), backlog=128)
# ANCHOR_END: listen_once


# ANCHOR: pool
def worker(server):
    while True:
        conn, _ = server.accept()  # every idle worker waits here, on one socket
        serve(conn)


def start_workers(server, threads):
    for number in range(1, threads + 1):
        threading.Thread(
            target=worker, args=(server,), name=f"worker-{number}", daemon=True
        ).start()
# ANCHOR_END: pool


# ANCHOR: executor
def accept_into(server, threads):
    # One thread accepts; the executor's workers serve. Its queue has no bound:
    # every client is accepted at once and waits in this process, holding a
    # descriptor, instead of in the kernel's backlog.
    with ThreadPoolExecutor(max_workers=threads) as pool:
        while True:
            conn, _ = server.accept()
            pool.submit(serve, conn)
# ANCHOR_END: executor


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--executor", action="store_true")
    args = parser.parse_args()
    server = listen(args.host, args.port)
    host, port = server.getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)
    try:
        if args.executor:
            accept_into(server, args.threads)
        else:
            start_workers(server, args.threads)
            threading.Event().wait()  # until Ctrl-C; the workers are daemons
    except KeyboardInterrupt:
        print("shutting down", flush=True)


if __name__ == "__main__":
    main()
