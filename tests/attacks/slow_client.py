#!/usr/bin/env python3
"""Slow and stalling clients for the ctrace serve cases of tests/attacks/test_net.sh.

    slow_client.py stall PORT N         opens N connections, sends half a request line on each,
                                        prints "READY" and holds them until killed
    slow_client.py reader PORT PATH     asks for PATH, then reads one byte a second until killed
    slow_client.py closed PORT          sends half a request line, prints the seconds until the
                                        server closes the connection
"""
import socket
import sys
import time

mode, port = sys.argv[1], int(sys.argv[2])


def connect(rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", port))
    return s


if mode == "stall":
    conns = []
    for _ in range(int(sys.argv[3])):
        s = connect()
        s.sendall(b"GET /ind")
        conns.append(s)
    print("READY", flush=True)
    while True:
        time.sleep(60)
elif mode == "reader":
    s = connect(rcvbuf=4096)
    s.sendall(b"GET /%s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % sys.argv[3].encode())
    print("READY", flush=True)
    while s.recv(1):
        time.sleep(1)
elif mode == "closed":
    s = connect()
    s.sendall(b"GET /ind")
    t0 = time.time()
    s.settimeout(120)
    try:
        while s.recv(4096):
            pass
    except OSError:
        pass
    print("%.1f" % (time.time() - t0), flush=True)
