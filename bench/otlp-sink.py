#!/usr/bin/env python3
"""An OTLP/HTTP sink for bench/traces.sh: answers every POST /v1/traces with
200 and an empty protobuf body, and counts what it got. Prints its port,
then, on SIGTERM, how many exports and bytes arrived."""
import http.server
import signal
import sys
import threading

got = {"exports": 0, "bytes": 0}
lock = threading.Lock()


class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        self.rfile.read(length)
        with lock:
            got["exports"] += 1
            got["bytes"] += length
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)


def stop(*_):
    print(f"sink: {got['exports']} exports, {got['bytes']} bytes", flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
print(server.server_address[1], flush=True)
server.serve_forever()
