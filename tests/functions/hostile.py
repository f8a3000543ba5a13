"""A Python function that attacks Flare from inside, chosen by path."""
import ctypes
import os
import socket
import sys
import time

LIBC = ctypes.CDLL(None, use_errno=True)
# x86_64 syscall numbers (the tests run there).
SYS_CLONE, SYS_IO_URING_SETUP, SYS_FSOPEN, SYS_CLONE3 = 56, 425, 430, 435
CLONE_NEWUSER, CLONE_NEWNET, SIGCHLD = 0x10000000, 0x40000000, 17


def syscall_result(rc):
    """'ok' when the call worked, else the errno's name."""
    if rc >= 0:
        return "ok"
    return os.strerror(ctypes.get_errno())


def syscalls():
    """Each way into a new namespace or around seccomp, and what it got."""
    out = {}
    out["unshare_user"] = syscall_result(LIBC.unshare(CLONE_NEWUSER))
    LIBC.syscall.restype = ctypes.c_long
    # clone with a namespace flag; a child that exits at once if it runs.
    rc = LIBC.syscall(SYS_CLONE, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0)
    if rc == 0:
        os._exit(0)
    if rc > 0:
        os.waitpid(rc, 0)
    out["clone_newuser"] = syscall_result(rc)
    params = ctypes.create_string_buffer(120)
    out["io_uring_setup"] = syscall_result(LIBC.syscall(SYS_IO_URING_SETUP, 4, params))
    out["fsopen"] = syscall_result(LIBC.syscall(SYS_FSOPEN, b"tmpfs", 0))
    # struct clone_args: flags first, 88 bytes in all.
    args = (ctypes.c_uint64 * 11)(CLONE_NEWUSER | CLONE_NEWNET)
    rc = LIBC.syscall(SYS_CLONE3, args, 88)
    if rc == 0:
        os._exit(0)
    out["clone3_namespaces"] = syscall_result(rc)
    # An x32 syscall number: unshare | __X32_SYSCALL_BIT.
    out["x32_unshare"] = syscall_result(LIBC.syscall(272 | 0x40000000, CLONE_NEWUSER))
    # Off the allow list: ptrace, bpf, the kernel's crypto sockets, packets.
    out["ptrace"] = syscall_result(LIBC.syscall(101, 0, 0, 0, 0))  # PTRACE_TRACEME
    out["bpf"] = syscall_result(LIBC.syscall(321, 0, 0, 0))
    out["socket_alg"] = syscall_result(LIBC.socket(38, socket.SOCK_SEQPACKET, 0))  # AF_ALG
    out["socket_packet"] = syscall_result(LIBC.socket(17, socket.SOCK_RAW, 0))  # AF_PACKET
    # Ordinary work: a Unix socket pair, randomness.
    a, b = socket.socketpair()
    a.sendall(b"x")
    out["socketpair"] = "ok" if b.recv(1) == b"x" else "broken"
    out["urandom"] = "ok" if len(os.urandom(16)) == 16 else "broken"
    # Ordinary work still works: a thread and a child process.
    import threading
    t = threading.Thread(target=lambda: None)
    t.start()
    t.join()
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    _, status = os.waitpid(pid, 0)
    out["fork"] = "ok" if os.WEXITSTATUS(status) == 7 else "broken"
    return out


def main(req):
    path = req.path.split("?")[0]
    q = req.query
    if path == "/echo":
        return req.body
    if path == "/sleep":
        time.sleep(float(q.get("s", "1")))
        return "slept"
    if path == "/status":
        return ("status " + q.get("code", ""), int(q.get("code", "200")))
    if path == "/framing":
        # Framing headers that would desynchronize a keep-alive connection.
        return ("a body the headers lie about", 200, {
            "content-length": "0",
            "transfer-encoding": "chunked",
            "connection": "keep-alive",
            "keep-alive": "timeout=999",
            "upgrade": "h2c",
            "trailer": "x-evil",
            "x-fine": "kept",
        })
    if path == "/headers":
        n, size = int(q.get("n", "1")), int(q.get("size", "1"))
        return ("many headers", 200, {"x-h%d" % i: "v" * size for i in range(n)})
    if path == "/big":
        return b"x" * (int(q.get("mb", "1")) << 20)
    if path == "/raise":
        raise ValueError("secret-token-" + q.get("tag", "x"))
    if path == "/syscalls":
        return syscalls()
    if path == "/memory":
        data = bytearray(int(q.get("mb", "1")) << 20)
        for i in range(0, len(data), 4096):
            data[i] = 1
        return "allocated %d MiB" % (len(data) >> 20)
    if path == "/spew":
        # Straight to the worker's real stdout, without a newline.
        chunk = b"y" * (1 << 20)
        for _ in range(int(q.get("mb", "1"))):
            os.write(1, chunk)
        return "spewed"
    if path == "/fill-tmp":
        written = 0
        try:
            with open("/tmp/fill", "wb") as f:
                for _ in range(int(q.get("mb", "100"))):
                    f.write(b"z" * (1 << 20))
                    f.flush()
                    written += 1
        except OSError as e:
            return "stopped after %d MiB: %s" % (written, type(e).__name__)
        finally:
            try:
                os.remove("/tmp/fill")
            except OSError:
                pass
        return "wrote %d MiB" % written
    if path == "/fetch":
        # Outbound HTTP the ordinary way: urllib honours HTTP_PROXY.
        import urllib.error
        import urllib.request
        try:
            with urllib.request.urlopen(q["url"], timeout=10) as r:
                return "%d %s" % (r.status, r.read().decode())
        except urllib.error.HTTPError as e:
            return "refused %d %s" % (e.code, e.read().decode().strip())
        except Exception as e:
            return "failed %s: %s" % (type(e).__name__, e)
    if path == "/tunnel":
        # A CONNECT tunnel through HTTPS_PROXY, as an HTTPS client makes.
        import http.client
        import urllib.parse
        proxy = urllib.parse.urlsplit(os.environ["HTTPS_PROXY"])
        host, port = q["to"].rsplit(":", 1)
        conn = http.client.HTTPConnection(proxy.hostname, proxy.port, timeout=10)
        conn.set_tunnel(host, int(port))
        try:
            conn.request("GET", "/")
            r = conn.getresponse()
            return "%d %s" % (r.status, r.read().decode())
        except OSError as e:
            return "failed %s: %s" % (type(e).__name__, e)
    if path == "/certs":
        # The trusted roots an HTTPS client checks servers against.
        import ssl
        return str(ssl.create_default_context().cert_store_stats()["x509_ca"])
    if path == "/connect":
        # Straight to an address, past any proxy.
        try:
            socket.create_connection((q["host"], int(q["port"])), timeout=2).close()
            return "connected"
        except OSError as e:
            return "failed %s" % type(e).__name__
    if path == "/forge":
        print("line one\r\x1b[2Kforged\ninvocation 0000 fake line")
        return "forged"
    return str(os.getpid())
