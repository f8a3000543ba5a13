"""Flare's Python worker: speaks environments/PROTOCOL.md on FLARE_SOCKET.

Function contract:
    def main(req):          # or def main(): with no argument
        return "text"       # or bytes, a dict/list (sent as JSON), or
                            # (body, status) / (body, status, headers)

req has .method, .path, .query (dict of first values), .headers (dict,
lower-case names), .body (bytes) and .json().
Standard library only.
"""
import base64
import importlib
import importlib.util
import inspect
import io
import json
import os
import platform
import socket
import struct
import sys
import threading
import traceback
import urllib.parse


def read_exact(sock, n):
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data.extend(chunk)
    return bytes(data)


def read_frame(sock):
    (hlen,) = struct.unpack(">I", read_exact(sock, 4))
    header = json.loads(read_exact(sock, hlen))
    (blen,) = struct.unpack(">I", read_exact(sock, 4))
    body = read_exact(sock, blen) if blen else b""
    return header, body


# Threads a function starts may print while the call's answer is sent.
SENDING = threading.Lock()


def write_frame(sock, header, body=b""):
    h = json.dumps(header).encode()
    with SENDING:
        sock.sendall(struct.pack(">I", len(h)) + h + struct.pack(">I", len(body)) + body)


class Request:
    def __init__(self, header, body):
        self.method = header.get("method", "GET")
        self.path = header.get("path", "/")
        parsed = urllib.parse.urlsplit(self.path)
        self.query = {k: v[0] for k, v in urllib.parse.parse_qs(parsed.query).items()}
        self.headers = {k.lower(): v for k, v in header.get("headers", [])}
        self.body = body

    def json(self):
        return json.loads(self.body or b"null")


def to_response(result):
    status, headers = 200, {}
    if isinstance(result, tuple):
        if len(result) == 2:
            result, status = result
        elif len(result) == 3:
            result, status, headers = result
        else:
            raise TypeError("return (body, status) or (body, status, headers)")
    if result is None:
        body = b""
    elif isinstance(result, bytes):
        body = result
        headers.setdefault("content-type", "application/octet-stream")
    elif isinstance(result, str):
        body = result.encode()
        headers.setdefault("content-type", "text/plain; charset=utf-8")
    elif isinstance(result, (dict, list)):
        body = json.dumps(result).encode()
        headers.setdefault("content-type", "application/json")
    else:
        raise TypeError(f"cannot send a {type(result).__name__}; return str, bytes, dict, list or a tuple")
    return int(status), [[str(k), str(v)] for k, v in headers.items()], body


# Bytes of one call's output sent to Flare; the rest is only counted (Flare
# keeps 1 MiB a call and says how much was dropped).
LOG_BUDGET = 1 << 20
# Longest piece of a line held before it is sent.
LOG_CHUNK = 16 << 10


class Lines(io.TextIOBase):
    """Sends what the function prints to Flare as it is written, a `log`
    frame per write that completes a line, so nothing waits in here that a
    kill could take along."""

    def __init__(self, sock, call, stream, budget):
        self.sock, self.call, self.stream, self.budget = sock, call, stream, budget
        self.partial = ""

    def writable(self):
        return True

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self.partial += text
        if "\n" in text or len(self.partial) >= LOG_CHUNK:
            end = self.partial.rfind("\n") + 1 or len(self.partial)
            self.send(self.partial[:end])
            self.partial = self.partial[end:]
        return len(text)

    def flush(self):
        pass

    def send(self, text):
        data = text.encode("utf-8", "replace")
        room = max(0, LOG_BUDGET - self.budget["sent"])
        kept, dropped = data[:room], len(data) - min(room, len(data))
        self.budget["sent"] += len(kept)
        self.budget["dropped"] += dropped
        if kept:
            write_frame(self.sock, {"op": "log", "id": self.call, "stream": self.stream}, kept)

    def finish(self):
        if self.partial:
            self.send(self.partial + "\n")
            self.partial = ""


class Call:
    """One invocation's output: its streams are made on the first write
    (most calls print nothing) and share one budget."""

    __slots__ = ("sock", "id", "budget", "streams")

    def __init__(self, sock, id):
        self.sock, self.id, self.budget, self.streams = sock, id, {"sent": 0, "dropped": 0}, {}

    def stream(self, name):
        lines = self.streams.get(name)
        if lines is None:
            lines = self.streams[name] = Lines(self.sock, self.id, name, self.budget)
        return lines

    def finish(self):
        """Sends what is left of unfinished lines, and how much the budget
        dropped."""
        for lines in self.streams.values():
            lines.finish()
        if self.budget["dropped"]:
            write_frame(self.sock, {"op": "log", "id": self.id, "stream": "stderr",
                                    "dropped": self.budget["dropped"]})
            self.budget["dropped"] = 0


# Whose output a thread writes: the call it runs, or for a thread a function
# started, the call that started it. Output of a call no longer in flight,
# or of none (a thread left running after its call), is the worker's own:
# sent with no id, so it is never filed under another invocation.
CALL = threading.local()
LIVE = {}  # call id -> Call

_thread_start = threading.Thread.start
_thread_bootstrap = threading.Thread._bootstrap_inner


def _start(self):
    self._flare_call = getattr(CALL, "id", None)
    _thread_start(self)


def _bootstrap(self):
    CALL.id = getattr(self, "_flare_call", None)
    _thread_bootstrap(self)


threading.Thread.start = _start
threading.Thread._bootstrap_inner = _bootstrap


class Output(io.TextIOBase):
    """sys.stdout / sys.stderr: each write goes to the call of the thread
    that writes, or to the worker's own stream."""

    def __init__(self, stream, stray):
        self.stream, self.stray = stream, stray

    def writable(self):
        return True

    def write(self, text):
        call = LIVE.get(getattr(CALL, "id", None))
        return (call.stream(self.stream) if call else self.stray).write(text)

    def flush(self):
        pass


def prepare(header):
    """Sets the function's environment variables and writes its secrets
    (read-only files under /secrets) before its code is loaded."""
    for name, value in (header.get("env") or {}).items():
        os.environ[name] = value
    for entry in header.get("files") or []:
        path = os.path.normpath(entry["path"])
        if not path.startswith("/secrets/"):
            raise ValueError(f"a file outside /secrets: {path}")
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400)
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64decode(entry["data"]))


def load(code, file, entrypoint):
    sys.path.insert(0, code)
    if file:
        spec = importlib.util.spec_from_file_location("function", os.path.join(code, file))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        name = entrypoint or "main"
    else:
        module_name, _, name = (entrypoint or "main.main").rpartition(".")
        module = importlib.import_module(module_name or "main")
    target = module
    for part in name.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{entrypoint or name} is not callable")
    takes_request = len(inspect.signature(target).parameters) > 0
    return target, takes_request


def forward_egress(path):
    """The sandbox's only way out is Flare's egress proxy on a Unix socket:
    forward a loopback port to it and point the usual proxy variables there,
    so urllib, requests and friends go through it. One thread (threads
    count toward the sandbox's process limit) runs every connection, each
    direction with its own flow control, so a stalled one holds up no other."""
    import asyncio

    async def pump(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except OSError:
            pass

    async def connection(reader, writer):
        try:
            upstream_reader, upstream = await asyncio.open_unix_connection(path)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pump(reader, upstream), pump(upstream_reader, writer))
        writer.close()
        upstream.close()

    started, port = threading.Event(), []

    async def serve():
        server = await asyncio.start_server(connection, "127.0.0.1", 0)
        port.append(server.sockets[0].getsockname()[1])
        started.set()
        await server.serve_forever()

    threading.Thread(target=lambda: asyncio.run(serve()), name="flare-egress", daemon=True).start()
    if not started.wait(5):
        return
    url = "http://127.0.0.1:%d" % port[0]
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        os.environ[name] = url
    # The sandbox's own loopback is reached directly.
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "localhost,127.0.0.1,::1"


class Discard:
    """A socket that drops what is sent: the warm-up's way out."""

    def sendall(self, data):
        pass


WARM_SOURCE = '''def main(req):
    print("warm", req.path)
    return {"path": req.path, "query": req.query, "body": req.json()}, 200, {"x-warm": "1"}
'''


def warm():
    """Runs the request path once, on a throwaway function, before this
    worker says ready: the lazily built state it needs (import machinery,
    JSON, URL parsing) is built now, and a worker forked from a zygote takes
    its copy-on-write faults for it now, while the pool fills, instead of on
    its first request. Leaves nothing behind: no file, module or path."""
    import tempfile

    with tempfile.TemporaryDirectory() as code:
        with open(os.path.join(code, "warm.py"), "w") as f:
            f.write(WARM_SOURCE)
        try:
            target, takes_request = load(code, "warm.py", None)
        finally:
            sys.path.remove(code)
    header = json.loads(json.dumps({"op": "invoke", "id": "warm", "method": "POST",
                                    "path": "/warm?a=1&b=2", "headers": [["X-A", "b"]]}))
    call = Call(Discard(), "warm")
    out, LIVE["warm"], CALL.id = sys.stdout, call, "warm"
    sys.stdout = Output("stdout", None)
    try:
        status, headers, payload = to_response(target(Request(header, b'{"k": [1, 2]}')))
    finally:
        sys.stdout = out
        LIVE.pop("warm", None)
        CALL.id = None
    call.finish()
    json.dumps({"op": "response", "id": "warm", "status": status, "headers": headers})
    return payload


def main(warm_first=True):
    if os.environ.get("FLARE_EGRESS_SOCKET"):
        forward_egress(os.environ["FLARE_EGRESS_SOCKET"])
    if warm_first:
        warm()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(os.environ["FLARE_SOCKET"])
    write_frame(sock, {"op": "ready", "runtime": f"python {platform.python_version()}"})
    stray = {"sent": 0, "dropped": 0}
    sys.stdout = Output("stdout", Lines(sock, None, "stdout", stray))
    sys.stderr = Output("stderr", Lines(sock, None, "stderr", stray))
    function = None
    while True:
        try:
            header, body = read_frame(sock)
        except EOFError:
            return
        op = header.get("op")
        if op == "specialize":
            if function is not None:
                write_frame(sock, {"op": "error", "message": "already specialized"})
                continue
            try:
                prepare(header)
                function = load(header["code"], header.get("file"), header.get("entrypoint"))
                write_frame(sock, {"op": "specialized"})
            except BaseException as e:  # report anything, keep serving the protocol
                detail = "".join(traceback.format_exception_only(type(e), e)).strip()
                write_frame(sock, {"op": "error", "message": f"cannot load the function: {detail}"})
        elif op == "invoke":
            call_id = header.get("id")
            call = Call(sock, call_id)
            stray.update(sent=0, dropped=0)
            LIVE[call_id], CALL.id = call, call_id
            try:
                if function is None:
                    raise RuntimeError("worker is not specialized")
                target, takes_request = function
                try:
                    result = target(Request(header, body)) if takes_request else target()
                finally:
                    LIVE.pop(call_id, None)
                    CALL.id = None
                status, headers, payload = to_response(result)
                call.finish()
                write_frame(sock, {"op": "response", "id": call_id, "status": status,
                                   "headers": headers}, payload)
            except BaseException as e:
                if "stdout" in call.streams:
                    call.streams["stdout"].finish()
                call.stream("stderr").write(traceback.format_exc())
                call.finish()
                message = "".join(traceback.format_exception_only(type(e), e)).strip()
                write_frame(sock, {"op": "error", "id": call_id, "message": message})
                if isinstance(e, (SystemExit, KeyboardInterrupt)):
                    return
        elif op == "health":
            write_frame(sock, {"op": "ok"})
        elif op == "shutdown":
            return


if __name__ == "__main__":
    main()
