#!/usr/bin/python3
"""A custom worker: the smallest program that speaks environments/PROTOCOL.md,
written without Flare's Python worker, to show the protocol is enough."""
import json
import os
import socket
import struct


def read_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise SystemExit(0)
        data += chunk
    return data


def read(sock):
    header = json.loads(read_exact(sock, struct.unpack(">I", read_exact(sock, 4))[0]))
    size = struct.unpack(">I", read_exact(sock, 4))[0]
    return header, read_exact(sock, size) if size else b""


def send(sock, header, body=b""):
    h = json.dumps(header).encode()
    sock.sendall(struct.pack(">I", len(h)) + h + struct.pack(">I", len(body)) + body)


sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(os.environ["FLARE_SOCKET"])
send(sock, {"op": "ready", "runtime": "custom test worker"})
code = None
while True:
    header, body = read(sock)
    if header["op"] == "specialize":
        path = os.path.join(header["code"], header.get("file") or "function")
        code = open(path).read().strip()
        send(sock, {"op": "specialized"})
    elif header["op"] == "invoke":
        text = "custom[%s] %s %s" % (code, header["method"], header["path"])
        send(sock, {"op": "response", "id": header["id"], "status": 200,
                    "headers": [["content-type", "text/plain"]],
                    "logs": [["stdout", "custom worker saw " + header["path"]]]}, text.encode())
    elif header["op"] == "health":
        send(sock, {"op": "ok"})
    elif header["op"] == "shutdown":
        break
