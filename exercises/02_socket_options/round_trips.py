#!/usr/bin/env python3
"""Exercise 02.1: times 200 round trips to the "I get it!" server on one connection.

Each line is sent on its own, and the next only after the whole reply to it, the
line and `\\nI get it!\\n`, has come back: the pattern that Nagle's algorithm and
delayed ACKs make slow.

    python3 exercises/02_socket_options/round_trips.py [PORT]   (default 12345)
"""

import socket
import sys
import time

ROUND_TRIPS = 200
MARKER = b"\nI get it!\n"


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 12345
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        start = time.monotonic()
        for n in range(ROUND_TRIPS):
            conn.sendall(b"line %d" % n)
            reply = b""
            while not reply.endswith(MARKER):
                chunk = conn.recv(4096)
                if not chunk:
                    sys.exit("the server closed the connection")
                reply += chunk
        took = time.monotonic() - start
        conn.shutdown(socket.SHUT_WR)
    print("%d round trips: %.0f ms, %.2f ms each" % (ROUND_TRIPS, took * 1000, took * 1000 / ROUND_TRIPS))


if __name__ == "__main__":
    main()
