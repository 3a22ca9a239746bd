"""An echo server in Python on select.poll, in the shape of the seed's poll example,
made correct enough to pass lesson 05's protocol checks: it echoes (with sendall),
closes a connection when its client half-closes, and unregisters every socket it
closes. Used by tests/front_door.rs to show that `cargo run -- check 05` grades a
server written in another language. Usage: python3 poll_echo_server.py [--port PORT]
"""
import select
import socket
import sys

port = int(sys.argv[2]) if sys.argv[1:2] == ["--port"] else 8009
listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", port))
listener.listen(128)
print("listening on %s:%d" % listener.getsockname(), flush=True)

poller = select.poll()
poller.register(listener, select.POLLIN)
clients = {}

while True:
    for fd, event in poller.poll():
        if fd == listener.fileno():
            conn, _ = listener.accept()
            poller.register(conn, select.POLLIN)
            clients[conn.fileno()] = conn
            continue
        conn = clients[fd]
        try:
            data = conn.recv(65536)
            if data:
                # Blocking sendall: simple, and enough here, but one client that
                # does not read would stall every other (lesson 05 explains why).
                conn.sendall(data)
                continue
        except OSError:
            pass
        poller.unregister(fd)
        del clients[fd]
        conn.close()
