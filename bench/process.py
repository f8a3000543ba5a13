#!/usr/bin/env python3
"""Cold and warm requests to Python / Node.js functions on a running Flare.

  process.py cold RUNTIME N POOLSIZE   N fresh functions, first request each
                                       (the pool refilled before each)
  process.py rapid RUNTIME N POOLSIZE  N functions created back to back with
                                       no pause, first request each
  process.py warm RUNTIME N            N sequential requests to one warm function

Client-side latency on loopback, and the function's own time from the
Server-Timing header (fn;dur=...): their difference is what the router,
executor and HTTP add. Needs FLARE, FLARE_API, ROUTER in the environment.
Standard library only.
"""
import http.client
import json
import os
import subprocess
import sys
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODE = {"python": os.path.join(ROOT, "examples/python/hello.py"),
        "node": os.path.join(ROOT, "examples/node/hello.js"),
        # built by process-cold-start.sh with examples/java/build.sh
        "java": os.path.join(ROOT, "target/hello.jar")}


def flare(*args):
    out = subprocess.run([os.environ["FLARE"], *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"flare {' '.join(args)} failed: {out.stderr}")
    return out.stdout


def conn(base):
    u = urllib.parse.urlparse(base)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=60)


def get(c, path):
    t0 = time.perf_counter()
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    total = (time.perf_counter() - t0) * 1000
    if r.status != 200:
        sys.exit(f"GET {path}: {r.status} {body[:300]!r}")
    timing = r.getheader("server-timing") or ""
    fn = float(timing.split("dur=")[1]) if "dur=" in timing else float("nan")
    return total, fn


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def report(label, totals, fns):
    overhead = [t - f for t, f in zip(totals, fns)]
    print(f"  {label}")
    print(f"    client total   p50 {pct(totals, 50):8.2f} ms   p99 {pct(totals, 99):8.2f} ms")
    print(f"    function time  p50 {pct(fns, 50):8.2f} ms   p99 {pct(fns, 99):8.2f} ms")
    print(f"    difference     p50 {pct(overhead, 50):8.2f} ms   p99 {pct(overhead, 99):8.2f} ms  (router, executor, HTTP)")


def wait_idle(env, want, limit=30):
    deadline = time.time() + limit
    while time.time() < deadline:
        view = json.loads(flare("env", "get", "--name", env, "-o", "json"))
        if (view.get("idle_workers") or 0) >= want:
            return
        time.sleep(0.02)
    sys.exit(f"environment {env} did not refill its pool")


def cold(runtime, n, poolsize, wait=True):
    env = f"{runtime}-pool{poolsize}" + ("" if wait else "-rapid")
    flare("env", "create", "--name", env, "--runtime", runtime, "--poolsize", str(poolsize))
    router = conn(os.environ["ROUTER"])
    # The environment's own start (its zygote, its first pool) is not a
    # function's cold start: one function first, not counted.
    flare("fn", "create", "--name", f"{env}-first", "--env", env, "--code", CODE[runtime])
    get(router, f"/fn/{env}-first?name=x")
    flare("fn", "delete", "--name", f"{env}-first")
    totals, fns = [], []
    for i in range(n):
        name = f"{env}-f{i}"
        flare("fn", "create", "--name", name, "--env", env, "--code", CODE[runtime])
        if poolsize and wait:
            wait_idle(env, 1)
        total, fn = get(router, f"/fn/{name}?name=x")
        totals.append(total)
        fns.append(fn)
        flare("fn", "delete", "--name", name)
    where = f"pool of {poolsize}" if poolsize else "no pool"
    how = "pool refilled before each" if wait else "created back to back, no pause"
    report(f"{runtime}: first request of {n} fresh functions, {where}, {how}", totals, fns)


def warm(runtime, n):
    env = f"{runtime}-warm"
    flare("env", "create", "--name", env, "--runtime", runtime, "--poolsize", "1")
    name = f"{runtime}-warm-hello"
    flare("fn", "create", "--name", name, "--env", env, "--code", CODE[runtime])
    router = conn(os.environ["ROUTER"])
    for _ in range(50):
        get(router, f"/fn/{name}")
    totals, fns = [], []
    for _ in range(n):
        total, fn = get(router, f"/fn/{name}?name=x")
        totals.append(total)
        fns.append(fn)
    report(f"{runtime}: {n} sequential warm requests", totals, fns)
    print(f"    throughput (sequential, one connection): {n / (sum(totals) / 1000):.0f} req/s")


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "cold":
        cold(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif mode == "rapid":
        cold(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), wait=False)
    elif mode == "warm":
        warm(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(__doc__)
