"""Python's http.client against lesson 12's server: several requests on one
HTTPConnection, which keeps one TCP connection open for all of them (keep-alive).
Prints one line per response and, last, how many TCP connections were used (the
client's local addresses). Used by tests/12_http.rs.
Usage: python3 http_keep_alive.py PORT
"""
import http.client
import sys

port = int(sys.argv[1])
connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
local_ends = set()
for method, path in [("GET", "/hello"), ("GET", "/"), ("HEAD", "/hello"),
                     ("GET", "/no/such/page"), ("GET", "/hello")]:
    connection.request(method, path)
    response = connection.getresponse()
    body = response.read()
    local_ends.add(connection.sock.getsockname())
    print(method, path, response.status, response.reason,
          response.getheader("Content-Length"), len(body))
connection.close()
print("connections:", len(local_ends))
