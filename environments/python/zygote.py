"""Flare's Python zygote: an interpreter with the worker and common modules
already imported, from which new workers are forked instead of started
(SOCK, USENIX ATC '18). A pool miss then costs a fork, not an interpreter.

The zygote runs in its own sandbox, like a worker, with two differences
the host grants it: it may create namespaces (to give each child its own)
and it sees the workers' directories at /.flare/workers and their cgroups
at /.flare/cgroup. It never runs a
function's code. For each `fork` frame from the host it forks a child that
walls itself off before it becomes a worker:

  A  unshare(user, mount, pid, net, ipc, uts), maps its one uid, forks B, exits
  B  pid 1 of the new pid namespace: a fresh /proc, /tmp and /secrets, its
     worker's /code (read-only) and /run/flare, the workers' directories
     hidden, loopback up; forks C, then reaps and reports C's exit status
  C  the worker: stdout and stderr to its own FIFOs, every capability
     dropped, no new privileges, the same seccomp filters bubblewrap
     installs; every other descriptor closed; then worker.main()

A joins the worker's cgroups (the host made them and let the sandbox's
user write their cgroup.procs) before it does anything else, so B and C
are born in them and every page they copy is charged to the worker; the
host checks C's cgroup when C connects, before C says `ready`.
Fresh randomness: the kernel's (os.urandom) is per call; `random` reseeds
itself in every forked child (os.register_at_fork).
"""
import ctypes
import gc
import os
import select
import signal
import socket
import struct
import sys


def load_worker():
    """The worker beside this file, and what it imports, loaded once and
    shared by every fork (by path: its directory is not listable)."""
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
    spec = importlib.util.spec_from_file_location("worker", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["worker"] = module
    spec.loader.exec_module(module)
    return module


worker = load_worker()

# Common modules functions import, loaded once (the SOCK paper's point:
# import time dominates a Python cold start).
import collections, datetime, decimal, hashlib, math, random, re, string, time, uuid  # noqa: E401,E402,F401

libc = ctypes.CDLL(None, use_errno=True)

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
# statvfs f_flag bits that a bind remount must keep (they are locked).
KEPT = {os.ST_RDONLY: MS_RDONLY, os.ST_NOSUID: MS_NOSUID, os.ST_NODEV: MS_NODEV,
        os.ST_NOEXEC: MS_NOEXEC, os.ST_NOATIME: 1024, os.ST_NODIRATIME: 2048,
        os.ST_RELATIME: 1 << 21}
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_SECCOMP = 1, 24, 22
PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 38, 47, 4
SECCOMP_MODE_FILTER = 2
SYS_CAPSET = 126  # x86_64
SIOCSIFFLAGS, IFF_UP, IFF_LOOPBACK, IFF_RUNNING = 0x8914, 0x1, 0x8, 0x40
UID = os.getuid()
WORKERS = "/.flare/workers"


def check(rc, what):
    if rc != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def mount(source, target, fstype, flags, data=None):
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    check(libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def bind(source, target, read_only):
    mount(source, target, None, MS_BIND | MS_REC)
    flags = MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV
    for bit, flag in KEPT.items():
        if os.statvfs(target).f_flag & bit:
            flags |= flag
    if read_only:
        flags |= MS_RDONLY
    mount(None, target, None, flags)


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def read_filters():
    filters = []
    for path in ("/.flare/seccomp.bpf", "/.flare/seccomp-abi.bpf"):
        with open(path, "rb") as f:
            filters.append(f.read())
    return filters


FILTERS = read_filters()


def lock_down():
    """No capability, no way to gain one, the workers' seccomp filters."""
    for cap in range(64):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break  # past the last capability this kernel knows
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = ctypes.create_string_buffer(struct.pack("Ii", 0x20080522, 0))  # version 3, this process
    data = ctypes.create_string_buffer(24)  # effective, permitted, inheritable: empty, two words each
    check(libc.syscall(SYS_CAPSET, header, data), "capset")
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    for program in FILTERS:
        buffer = ctypes.create_string_buffer(program, len(program))
        fprog = SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
        check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0), "seccomp")


def loopback_up():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        import fcntl
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", IFF_UP | IFF_LOOPBACK | IFF_RUNNING))


def child_a(request, report):
    """Into the worker's cgroups before anything else, so every page the
    child copies from here on is the worker's (a charge cannot be moved
    later); then new namespaces; B becomes pid 1 of the new pid namespace.
    The zygote's stdout and stderr are not passed on: B lives as long as
    the worker, which could open them through /proc/1/fd, and they are
    the same pipes in every child (a channel between tenants)."""
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    for procs in request["cgroups"]:
        with open(procs, "w") as f:
            f.write("0")  # the writer itself
    check(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET
                       | CLONE_NEWIPC | CLONE_NEWUTS), "unshare")
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(f"{UID} {UID} 1")
    if os.fork() == 0:
        child_b(request, report)
    os._exit(0)


def child_b(request, report):
    """pid 1: the worker's own filesystem view, then C, then its reaper."""
    try:
        home = os.path.join(WORKERS, request["id"])
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        for target, size in (("/tmp", request["tmp_bytes"]), ("/secrets", request["secrets_bytes"])):
            mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode=0755")
        bind(os.path.join(home, "code"), "/code", True)
        bind(os.path.join(home, "run"), "/run/flare", False)
        # Nothing of the other workers stays in view.
        mount("tmpfs", "/.flare", "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4096,mode=0555")
        loopback_up()
        os.chdir("/code")
        worker_pid = os.fork()
        if worker_pid == 0:
            child_c(request, report)
    except BaseException as e:
        fail(report, e)
    os.close(report)
    lock_down()
    reap(worker_pid)


def reap(worker_pid):
    """Waits for C (and adopts orphans); when C ends, says how in
    /run/flare/exit and ends the namespace with it."""
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(1)
        except InterruptedError:
            continue
        if pid != worker_pid:
            continue
        if os.WIFSIGNALED(status):
            how = f"signal {os.WTERMSIG(status)}"
        else:
            how = f"status {os.waitstatus_to_exitcode(status)}"
        try:
            with open("/run/flare/exit", "w") as f:
                f.write(how)
        except OSError:
            pass
        os._exit(0)


def child_c(request, report):
    """The worker itself."""
    try:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        for fd, name in ((1, "stdout"), (2, "stderr")):
            out = os.open(f"/run/flare/{name}", os.O_WRONLY)
            os.dup2(out, fd)
            os.close(out)
        os.environ.clear()
        os.environ.update(request["env"])
        lock_down()
        os.closerange(3, report)
        os.closerange(report + 1, os.sysconf("SC_OPEN_MAX"))
        os.write(report, b"ok")
        os.close(report)
    except BaseException as e:
        fail(report, e)
        os._exit(1)
    sys.argv = ["/env/worker.py"]
    try:
        worker.main(warm_first=request.get("warm", True))
    finally:
        sys.stdout.flush()
        os._exit(0)


def fail(report, error):
    try:
        os.write(report, f"{type(error).__name__}: {error}".encode()[:1000])
    except OSError:
        pass
    os._exit(1)


# Forks not yet answered: the read end of a child's report pipe -> [the
# worker's id, the pid of its A, what it reported so far].
PENDING = {}


def fork(sock, request):
    """Forks a worker for `request` and returns at once: the child reports
    on a pipe of its own when it is walled off (see `answer`), so forks
    overlap, and so do their moves into cgroups (each may wait for an RCU
    grace period, which overlapping moves share)."""
    read_end, write_end = os.pipe()
    # Everything the zygote holds goes to the collector's permanent
    # generation: a child's collections then never walk (and so never
    # copy) the pages it shares with the zygote.
    gc.freeze()
    pid = os.fork()
    if pid == 0:
        try:
            # Nothing of the zygote's stays open: its socket, and the
            # report pipes of forks still under way.
            os.closerange(3, write_end)
            os.closerange(write_end + 1, os.sysconf("SC_OPEN_MAX"))
            child_a(request, write_end)
        except BaseException as e:
            fail(write_end, e)
        os._exit(1)
    os.close(write_end)
    PENDING[read_end] = [request.get("id"), pid, b""]


def answer(sock, read_end):
    """Reads a child's report; at its end, answers the fork it was for."""
    entry = PENDING[read_end]
    chunk = os.read(read_end, 1024)
    if chunk:
        entry[2] = (entry[2] + chunk)[:1024]
        return
    del PENDING[read_end]
    os.close(read_end)
    id, pid, report = entry
    os.waitpid(pid, 0)  # A, which ends once B is forked
    if report == b"ok":
        worker.write_frame(sock, {"op": "forked", "id": id})
    else:
        message = report.decode("utf-8", "replace") or "the child ended before it was ready"
        worker.write_frame(sock, {"op": "error", "id": id, "message": f"fork failed: {message}"})


def main():
    # What the request path builds lazily is built once here, shared by
    # every child (each runs it again to take its own faults early).
    worker.warm()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(os.environ["FLARE_SOCKET"])
    worker.write_frame(sock, {"op": "ready", "runtime": f"python zygote {sys.version.split()[0]}"})
    while True:
        readable, _, _ = select.select([sock, *PENDING], [], [])
        for fd in readable:
            if fd is not sock:
                answer(sock, fd)
                continue
            try:
                header, _ = worker.read_frame(sock)
            except EOFError:
                return
            op = header.get("op")
            if op == "fork":
                try:
                    fork(sock, header)
                except Exception as e:  # a fork that fails is reported, the zygote lives on
                    worker.write_frame(sock, {"op": "error", "id": header.get("id"),
                                              "message": f"fork failed: {e}"})
            elif op == "health":
                worker.write_frame(sock, {"op": "ok"})
            elif op == "shutdown":
                return


if __name__ == "__main__":
    main()
