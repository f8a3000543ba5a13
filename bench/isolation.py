#!/usr/bin/env python3
"""Figures per isolation level for a Python hello, on a running Flare.

  isolation.py LEVEL...     (namespace, gvisor, microvm)

For each level: the boot time of one sandbox (pool refills, timed from
outside), the first request from a full pool and from an empty one, warm
latency and throughput at concurrency 1 and 32 (wrk), and memory per idle
sandbox (PSS of its processes and its cgroup's charge), with how many idle
sandboxes fit in 4 GiB. Needs FLARE, FLARE_API, FLARE_TOKEN, ROUTER in the
environment; run as root (it reads the workers' cgroups). Standard library.
"""
import glob
import json
import os
import subprocess
import sys
import time
import urllib.request

from process import CODE, conn, flare, get, pct

CGROUP = "/sys/fs/cgroup"
GIB4 = 4 << 30


def api(path):
    request = urllib.request.Request(os.environ["FLARE_API"] + path,
                                     headers={"Authorization": "Bearer " + os.environ["FLARE_TOKEN"]})
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def idle(env):
    return api(f"/v1/environments/{env}").get("idle_workers") or 0


def boot_times(env, n):
    """Creates a pool of n and times each sandbox as it becomes ready (the
    pool starts them one after another)."""
    flare("env", "update", "--name", env, "--poolsize", str(n))
    times, have, last = [], idle(env), time.perf_counter()
    deadline = time.time() + 120
    while have < n and time.time() < deadline:
        time.sleep(0.002)  # polling must not take the core the pool needs
        now_have = idle(env)
        if now_have > have:
            now = time.perf_counter()
            times.extend([(now - last) * 1000 / (now_have - have)] * (now_have - have))
            have, last = now_have, now
    return times


def worker_cgroups():
    """Cgroup directories of workers (not zygotes) by id, memory controller."""
    root = os.path.join(CGROUP, "memory", "flare")
    if not os.path.isdir(root):  # cgroup v2
        root = os.path.join(CGROUP, "flare")
    return {os.path.basename(d): d for d in glob.glob(os.path.join(root, "*-w*"))}


def pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def sandbox_memory(dirs):
    """Mean PSS (every process in the cgroup, shared pages split among
    sharers) and mean cgroup charge per sandbox, in MiB."""
    pss, charge = [], []
    for d in dirs:
        with open(os.path.join(d, "cgroup.procs")) as f:
            pids = [int(p) for p in f.read().split()]
        pss.append(sum(pss_kib(p) for p in pids) / 1024)
        usage = "memory.usage_in_bytes" if os.path.exists(os.path.join(d, "memory.usage_in_bytes")) else "memory.current"
        with open(os.path.join(d, usage)) as f:
            charge.append(int(f.read()) / (1 << 20))
    return sum(pss) / len(pss), sum(charge) / len(charge)


def first_requests(env, runtime, n, wait):
    router = conn(os.environ["ROUTER"])
    totals = []
    for i in range(n):
        name = f"{env}-first-{time.monotonic_ns()}"
        flare("fn", "create", "--name", name, "--env", env, "--code", CODE[runtime])
        if wait:
            deadline = time.time() + 60
            while idle(env) < 1 and time.time() < deadline:
                time.sleep(0.005)
        total, _ = get(router, f"/fn/{name}?name=x")
        totals.append(total)
        flare("fn", "delete", "--name", name)
    return totals


def wrk(url, connections):
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", "-d5s", "--latency", url],
                         capture_output=True, text=True).stdout
    rps = next((l.split()[1] for l in out.splitlines() if l.startswith("Requests/sec")), "?")
    p99 = next((l.split()[1] for l in out.splitlines() if l.strip().startswith("99%")), "?")
    errors = [l.strip() for l in out.splitlines() if "Non-2xx" in l or "Socket errors" in l]
    return rps, p99, errors


def level(isolation, runtime="python"):
    env = f"{runtime}-{isolation}"
    made = subprocess.run([os.environ["FLARE"], "env", "create", "--name", env, "--runtime", runtime,
                           "--poolsize", "0", "--isolation", isolation], capture_output=True, text=True)
    if made.returncode != 0:
        print(f"== {isolation}: not available here: {made.stderr.strip()}")
        return
    print(f"== {isolation} ({runtime} hello)")
    try:
        # An empty pool: every first request starts a sandbox. The
        # environment's own start (its zygote) is not one: done first.
        first_requests(env, runtime, 1, False)
        empty = first_requests(env, runtime, 20, False)
        boots = boot_times(env, 20)
        time.sleep(2)
        pss, charge = sandbox_memory(list(worker_cgroups().values()))
        print(f"  boot of one sandbox (pool refill, 20)   p50 {pct(boots, 50):7.1f} ms   p99 {pct(boots, 99):7.1f} ms")
        print(f"  memory per idle sandbox                 PSS {pss:6.1f} MiB   cgroup charge {charge:6.1f} MiB"
              f"   -> {int(GIB4 / (pss * (1 << 20)))} fit in 4 GiB (by PSS)")
        flare("env", "update", "--name", env, "--poolsize", "3")
        full = first_requests(env, runtime, 20, True)
        print(f"  first request, full pool (20)           p50 {pct(full, 50):7.1f} ms   p99 {pct(full, 99):7.1f} ms")
        print(f"  first request, empty pool (20)          p50 {pct(empty, 50):7.1f} ms   p99 {pct(empty, 99):7.1f} ms")
        name = f"{env}-warm"
        flare("fn", "create", "--name", name, "--env", env, "--code", CODE[runtime], "--maxscale", "32")
        router = conn(os.environ["ROUTER"])
        warm = [get(router, f"/fn/{name}?name=x")[0] for _ in range(500)][100:]
        print(f"  warm, sequential (400)                  p50 {pct(warm, 50):7.2f} ms   p99 {pct(warm, 99):7.2f} ms")
        for c in (1, 32):
            rps, p99, errors = wrk(f"{os.environ['ROUTER']}/fn/{name}", c)
            print(f"  wrk -c{c:<2} 5s                            {rps:>8} req/s   p99 {p99}  {' '.join(errors)}")
        flare("fn", "delete", "--name", name)
    finally:
        flare("env", "update", "--name", env, "--poolsize", "0")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for isolation in sys.argv[1:]:
        level(isolation)
