"""Lesson 15's protocol in Python: one dual-stack IPv6 socket (create_server with
dualstack_ipv6=True sets IPV6_V6ONLY to 0), a greeting line saying how the socket
sees each client, then echo, on a thread per client. Used by tests/15_names.rs to
show that `cargo run -- check 15` grades a server written in another language.
Usage: python3 names_server.py [--port PORT]
"""
import socket
import sys
import threading

port = int(sys.argv[2]) if sys.argv[1:2] == ["--port"] else 10015
listener = socket.create_server(
    ("", port), family=socket.AF_INET6, dualstack_ipv6=True, backlog=128
)
print("listening on [::]:%d" % listener.getsockname()[1], flush=True)


def serve(conn, address):
    # An AF_INET6 socket's address is (host, port, flowinfo, scope_id).
    host, peer_port = address[0], address[1]
    if host.startswith("::ffff:"):
        who = "an IPv4 client (%s) on an IPv6 socket" % host[len("::ffff:"):]
    else:
        who = "an IPv6 client"
    with conn:
        try:
            conn.sendall(("hello %s port %d: %s\n" % (host, peer_port, who)).encode())
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                conn.sendall(data)
        except OSError:
            return  # a reset: this client only


try:
    while True:
        conn, address = listener.accept()
        threading.Thread(target=serve, args=(conn, address), daemon=True).start()
except KeyboardInterrupt:
    print("shutting down", flush=True)
