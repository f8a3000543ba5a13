"""A Python function for Flare's tests: what it does depends on the path."""
import ctypes
import hashlib
import json
import os
import socket
import time
import uuid

INSTANCE = uuid.uuid4().hex


def walls(req):
    """Tries each wall of the sandbox from inside and reports what held."""
    report = {"uid": os.getuid(), "hostname": socket.gethostname(), "release": os.uname().release}

    def attempt(name, action):
        try:
            report[name] = "allowed: " + str(action())
        except Exception as e:  # what blocked it is the point
            report[name] = "denied: " + type(e).__name__

    attempt("read_shadow", lambda: open("/etc/shadow").read()[:10])
    attempt("list_data_dir", lambda: os.listdir(req.query.get("data_dir", "/nonexistent")))
    attempt("write_code", lambda: open("/code/x", "w").write("x"))
    attempt("write_tmp", lambda: open("/tmp/x", "w").write("x"))
    attempt("connect_loopback", lambda: socket.create_connection(("127.0.0.1", int(req.query.get("port", "1"))), timeout=2).close())
    report["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    with open("/proc/self/status") as f:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    report["cap_eff"] = status.get("CapEff", "").strip()
    report["seccomp"] = status.get("Seccomp", "").strip()
    libc = ctypes.CDLL(None, use_errno=True)
    rc = libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)
    report["mount"] = "allowed" if rc == 0 else "denied: errno %d" % ctypes.get_errno()
    return report


def fork_bomb():
    children = 0
    try:
        for _ in range(10000):
            pid = os.fork()
            if pid == 0:
                time.sleep(30)
                os._exit(0)
            children += 1
    except OSError as e:
        return {"children": children, "stopped_by": type(e).__name__}
    return {"children": children, "stopped_by": None}


def cpu_share(seconds):
    """Two processes spin for `seconds` of wall time; returns the CPU time
    they got. Unlimited on two free cores that is twice the wall time; under
    a quota of one core it is at most the wall time."""
    started = time.monotonic()
    children = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            while time.monotonic() - started < seconds:
                pass
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    wall = time.monotonic() - started
    t = os.times()
    return {"wall": wall, "cpu": t.children_user + t.children_system}


def neighbours(req):
    """What a worker forked from a zygote can tell of the others: where it
    came from, its randomness, and what it finds of another worker
    (`other`: its id) and of the file `/tmp/mine` it leaves behind."""
    import random
    import sys

    other = req.query.get("other", "")
    report = {
        "main": getattr(sys.modules.get("__main__"), "__file__", None),
        "worker": os.environ.get("FLARE_WORKER_ID"),
        "urandom": os.urandom(16).hex(),
        "random": random.random(),
        "tmp": sorted(os.listdir("/tmp")),
        "flare": sorted(os.listdir("/.flare")) if os.path.isdir("/.flare") else None,
        "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    }
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass  # the listing's own descriptor, closed by now
    report["fds"] = fds
    # The reaper (pid 1), as far as this worker can see it.
    try:
        report["reaper_fds"] = {fd: os.readlink(f"/proc/1/fd/{fd}") for fd in os.listdir("/proc/1/fd")}
    except OSError as e:
        report["reaper_fds"] = "denied: " + type(e).__name__
    for name, path in (("other_code", f"/.flare/workers/{other}/code"),
                       ("other_run", f"/.flare/workers/{other}/run")):
        try:
            report[name] = "allowed: " + str(os.listdir(path))
        except OSError as e:
            report[name] = "denied: " + type(e).__name__
    with open("/tmp/mine", "w") as f:
        f.write(report["worker"] or "")
    return report


def main(req):
    path = req.path.split("?")[0]
    if path == "/neighbours":
        return neighbours(req)
    if path == "/":
        return "hello from python"
    if path == "/json":
        return {"method": req.method, "got": req.json(), "header": req.headers.get("x-test")}
    if path == "/tuple":
        return ("created", 201, {"x-custom": "1"})
    if path == "/digest":
        return "%s %d" % (hashlib.sha256(req.body).hexdigest(), len(req.body))
    if path == "/bytes":
        return b"\x00\x01"
    if path == "/raise":
        print("about to fail")
        raise ValueError("deliberate failure")
    if path == "/id":
        return INSTANCE
    if path == "/sleep":
        time.sleep(float(req.query.get("s", "1")))
        return INSTANCE
    if path == "/crash":
        os._exit(3)
    if path == "/hog":
        hog = []
        while True:
            hog.append(bytearray(16 << 20))
    if path == "/forkbomb":
        return fork_bomb()
    if path == "/cpu":
        return cpu_share(float(req.query.get("s", "1")))
    if path == "/walls":
        return walls(req)
    return ("no such probe", 404)
