#!/usr/bin/env python3
"""Deploys many functions on a running Flare server and times their first
requests. Standard library only.

  functions.py cold-start N   N fresh functions, each timed on its first request
  functions.py many N         N functions deployed, then every one called once
  functions.py distinct N     the same with N different packages (each compiled)

Needs FLARE_API and ROUTER in the environment and the hello component path
as HELLO_WASM (bench/cold-start.sh and bench/many-functions.sh set them).
"""
import http.client
import json
import os
import sys
import time
import urllib.parse


def conn(base):
    u = urllib.parse.urlparse(base)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=60)


def call(c, method, path, body=None, headers=None):
    headers = dict(headers or {})
    token = os.environ.get("FLARE_TOKEN")
    if token and path.startswith("/v1/"):
        headers["Authorization"] = f"Bearer {token}"
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    data = r.read()
    return r.status, data


def leb(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def with_custom_section(wasm, tag):
    """The same component plus a custom section: new digest, same code."""
    name = b"flare-bench"
    content = leb(len(name)) + name + tag.encode()
    return wasm + b"\x00" + leb(len(content)) + content


def upload(api, path, tag=None):
    with open(path, "rb") as f:
        wasm = f.read()
    if tag is not None:
        wasm = with_custom_section(wasm, tag)
    status, data = call(api, "POST", "/v1/packages", wasm)
    if status != 201:
        sys.exit(f"upload failed: {status} {data!r}")
    return json.loads(data)


def create(api, name, package):
    doc = {"apiVersion": "flare.dev/v1", "kind": "Function",
           "metadata": {"name": name}, "spec": {"package": package}}
    status, data = call(api, "POST", "/v1/functions", json.dumps(doc),
                        {"content-type": "application/json"})
    if status != 201:
        sys.exit(f"create {name} failed: {status} {data!r}")


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    return 0


def cold_start(n):
    api, router = conn(os.environ["FLARE_API"]), conn(os.environ["ROUTER"])
    package = upload(api, os.environ["HELLO_WASM"])
    first, warm, create_ms = [], [], []
    for i in range(n):
        name = f"cold-{i}"
        t0 = time.perf_counter()
        create(api, name, package)
        t1 = time.perf_counter()
        status, body = call(router, "GET", f"/fn/{name}")
        t2 = time.perf_counter()
        assert status == 200 and body == b"Hello from Flare!\n", (status, body)
        call(router, "GET", f"/fn/{name}")
        t3 = time.perf_counter()
        create_ms.append((t1 - t0) * 1000)
        first.append((t2 - t1) * 1000)
        warm.append((t3 - t2) * 1000)
    print(f"{n} fresh functions, first request each (client-side, loopback, keep-alive):")
    for label, values in (("first request", first), ("second request", warm), ("create (API, fsync)", create_ms)):
        print(f"  {label:20s} p50 {percentile(values, 50):7.3f} ms   p99 {percentile(values, 99):7.3f} ms   max {max(values):7.3f} ms")
    print("  reference: Fission poolmgr cold start ~110 ms p50 (target here: p99 < 2 ms)")


def many(n, pid, distinct=False):
    api, router = conn(os.environ["FLARE_API"]), conn(os.environ["ROUTER"])
    rss_before = rss_kib(pid)
    package = upload(api, os.environ["HELLO_WASM"])
    t0 = time.perf_counter()
    for i in range(n):
        if distinct:
            package = upload(api, os.environ["HELLO_WASM"], tag=str(i))
        create(api, f"f{i}", package)
    t1 = time.perf_counter()
    rss_deployed = rss_kib(pid)
    for i in range(n):
        status, _ = call(router, "GET", f"/fn/f{i}")
        assert status == 200, status
    t2 = time.perf_counter()
    rss_after = rss_kib(pid)
    kind = "each its own package, compiled at upload" if distinct else "one shared package"
    print(f"{n} hello functions ({kind}) on one server:")
    print(f"  deploy all (sequential API calls): {t1 - t0:8.1f} s")
    print(f"  all answer once (sequential):      {t2 - t1:8.2f} s  ({n / (t2 - t1):.0f} first requests/s)")
    print(f"  server RSS: empty {rss_before / 1024:.1f} MiB, deployed {rss_deployed / 1024:.1f} MiB, "
          f"after calls {rss_after / 1024:.1f} MiB ({(rss_after - rss_before) / n:.1f} KiB per function)")


if __name__ == "__main__":
    mode, n = sys.argv[1], int(sys.argv[2])
    if mode == "cold-start":
        cold_start(n)
    elif mode == "many":
        many(n, int(os.environ["FLARE_PID"]))
    elif mode == "distinct":
        many(n, int(os.environ["FLARE_PID"]), distinct=True)
    else:
        sys.exit(__doc__)
