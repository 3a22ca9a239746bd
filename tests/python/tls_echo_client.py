"""Lesson 14's server through Python's ssl module, the seed's client with today's API.

usage: tls_echo_client.py PORT CA_FILE [SERVER_NAME]

ssl.wrap_socket (the seed's) was removed in Python 3.12; a default context verifies the
certificate chain and the host name, like the lesson's client. Prints what was
negotiated and the echo; with a name the certificate does not carry it prints the
verification error instead (and exits 0: that refusal is what is being tested).
"""

import socket
import ssl
import sys

port = int(sys.argv[1])
cafile = sys.argv[2]
name = sys.argv[3] if len(sys.argv) > 3 else "localhost"

context = ssl.create_default_context(cafile=cafile)
with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
    try:
        tls = context.wrap_socket(raw, server_hostname=name)
    except ssl.SSLCertVerificationError as err:
        print(f"refused: {err.verify_message}")
        sys.exit(0)
    print(f"version: {tls.version()}")
    print(f"cipher: {tls.cipher()[0]}")
    print(f"subject: {dict(pair[0] for pair in tls.getpeercert()['subject'])['commonName']}")
    message = b"hello from Python\n"
    tls.sendall(message)
    echo = b""
    while len(echo) < len(message):
        chunk = tls.recv(1024)
        if not chunk:
            break
        echo += chunk
    print(f"echo: {echo.decode()!r}")
    # unwrap(): send close_notify and wait for the server's; close() alone sends none.
    tls.unwrap()
    print("closed with close_notify")
