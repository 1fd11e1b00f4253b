# expect: RE (no network: the judge profile refuses every socket but AF_UNIX)
import socket

# the host's registry listens on 127.0.0.1:5180; the sandbox has its own loopback, and no inet sockets at all
socket.create_connection(("127.0.0.1", 5180), timeout=1).sendall(b"GET / HTTP/1.0\r\n\r\n")
print(3)
