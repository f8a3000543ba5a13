#!/usr/bin/env python3
"""Cluster mode's figures, on loopback: three nats-servers (JetStream,
clustered) and three Flare nodes a, b, c, plus one Flare on the embedded
store for comparison. Standard library only; bench/cluster.sh builds and
runs it.

  propagation  a function created, updated and deleted through node a:
               time from a's answer to node c serving the change (p50/p99)
  failover     kill -9 of a node running async invocations: time to the
               first of them picked up by another node
  throughput   wasm hello through one node in cluster mode vs the embedded
               store, wrk, alternating rounds (target ratio >= 0.95: the
               data path must not touch NATS per request)

Needs NATS_SERVER (a nats-server 2.10+), FLARE (the binary), GUESTS (the
built guests), wrk. Knobs: PROPAGATIONS (30), ROUNDS (3), DURATION (10s),
CONNECTIONS (32).
"""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

FLARE = os.environ["FLARE"]
GUESTS = os.environ["GUESTS"]
NATS = os.environ["NATS_SERVER"]
PROPAGATIONS = int(os.environ.get("PROPAGATIONS", "30"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
DURATION = os.environ.get("DURATION", "10s")
CONNECTIONS = os.environ.get("CONNECTIONS", "32")
HELLO = os.path.join(GUESTS, "hello_rust.wasm")
MISBEHAVE = os.path.join(GUESTS, "misbehave.wasm")

procs = []
work = tempfile.mkdtemp(prefix="flare-cluster-bench-")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, limit, what):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    sys.exit(f"gave up waiting for {what}")


def start_nats(n):
    routes = [free_port() for _ in range(n)]
    urls = []
    for i in range(n):
        port = free_port()
        conf = os.path.join(work, f"n{i}.conf")
        route_urls = ", ".join(f'"nats-route://127.0.0.1:{r}"' for r in routes)
        with open(conf, "w") as f:
            f.write(
                f'server_name: n{i}\nlisten: "127.0.0.1:{port}"\n'
                f'jetstream {{ store_dir: "{work}/n{i}" }}\n'
                f'cluster {{ name: bench, listen: "127.0.0.1:{routes[i]}", routes: [{route_urls}] }}\n'
            )
        log = open(os.path.join(work, f"n{i}.log"), "w")
        procs.append(subprocess.Popen([NATS, "-c", conf], stdout=subprocess.DEVNULL, stderr=log))
        urls.append(f"nats://127.0.0.1:{port}")
    return ",".join(urls)


class Node:
    def __init__(self, name, flags, token_from=None):
        self.name = name
        self.data = os.path.join(work, name)
        os.makedirs(self.data, exist_ok=True)
        if token_from:
            shutil.copy(os.path.join(token_from.data, "admin.token"), self.data)
        out = os.path.join(work, f"{name}.out")
        for _ in range(10):
            with open(out, "w") as stdout, open(os.path.join(work, f"{name}.log"), "w") as log:
                env = dict(os.environ, FLARE_LOG="warn")
                self.proc = subprocess.Popen(
                    [FLARE, "server", "--data-dir", self.data, "--addr", "127.0.0.1:0",
                     "--api-addr", "127.0.0.1:0", *flags],
                    stdout=stdout, stderr=log, env=env)
            started = wait_for(lambda: self.proc.poll() is not None or "api listening" in open(out).read(),
                               60, f"node {name}")
            if self.proc.poll() is None:
                break
            time.sleep(1)  # NATS still electing its leaders
        else:
            sys.exit(f"node {name} did not start: {open(os.path.join(work, name + '.log')).read()[-2000:]}")
        procs.append(self.proc)
        text = open(out).read()
        self.router = text.split("router listening on ")[1].split()[0]
        self.api = text.split("api listening on ")[1].split()[0]
        self.token = open(os.path.join(self.data, "admin.token")).read().strip()

    def cli(self, *args):
        env = dict(os.environ, FLARE_API=self.api, FLARE_TOKEN=self.token)
        out = subprocess.run([FLARE, *args], env=env, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"flare {' '.join(args)}: {out.stderr}")
        return out.stdout

    def connection(self):
        host, port = self.router.removeprefix("http://").split(":")
        return http.client.HTTPConnection(host, int(port), timeout=30)


def get(conn, path):
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    except (OSError, http.client.HTTPException):
        conn.close()
        return 0, b""


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def until_served(conn, path, ok):
    """Seconds until GET path on conn satisfies ok(status, body)."""
    started = time.monotonic()
    while True:
        status, body = get(conn, path)
        if ok(status, body):
            return time.monotonic() - started
        if time.monotonic() - started > 10:
            sys.exit(f"{path} not changed after 10 s")
        time.sleep(0.001)


def propagation(a, c):
    conn = c.connection()
    created, updated, deleted = [], [], []
    for i in range(PROPAGATIONS):
        name = f"p{i}"
        a.cli("fn", "create", "--name", name, "--code", MISBEHAVE, "--env", "V=1")
        created.append(until_served(conn, f"/fn/{name}/env", lambda s, b: s == 200))
        a.cli("fn", "update", "--name", name, "--env", "V=2")
        updated.append(until_served(conn, f"/fn/{name}/env", lambda s, b: b"V=2" in b))
        a.cli("fn", "delete", "--name", name)
        deleted.append(until_served(conn, f"/fn/{name}/env", lambda s, b: s == 404))
    print(f"propagation a -> c, {PROPAGATIONS} functions (from a's answer to c serving it):")
    for what, values in (("create", created), ("update", updated), ("delete", deleted)):
        print(f"  {what:<7} p50 {percentile(values, 50) * 1000:7.1f} ms   p99 {percentile(values, 99) * 1000:7.1f} ms"
              f"   max {max(values) * 1000:7.1f} ms")


def invocations(node):
    return json.loads(node.cli("invocations", "list", "--limit", "1000", "-o", "json"))


def failover(a, b):
    a.cli("fn", "create", "--name", "slow", "--code", MISBEHAVE)
    wait_for(lambda: get(b.connection(), "/fn/slow/sleep?ms=1")[0] == 200, 10, "slow on b")
    conn = b.connection()
    for _ in range(10):
        conn.request("POST", "/async/fn/slow/sleep?ms=15000")
        r = conn.getresponse()
        r.read()
        assert r.status == 202, r.status
    # Every invocation taken (by a or b) before b dies.
    wait_for(lambda: all(i["status"] == "running" for i in invocations(a)), 30, "all running")
    killed_us = time.time() * 1e6
    b.proc.send_signal(signal.SIGKILL)
    b.proc.wait()

    def taken_over():
        again = [i for i in invocations(a) if i["status"] == "running" and i["updated_us"] > killed_us]
        return again and min(i["updated_us"] for i in again)

    first = wait_for(taken_over, 60, "an invocation taken over (b held none? run again)")
    print(f"failover: kill -9 of b to its first async invocation running on a: {(first - killed_us) / 1e6:.2f} s"
          " (JetStream ack wait 6 s, progress acks every 2 s)")


def wrk(url):
    out = subprocess.run(["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{DURATION}", url],
                         capture_output=True, text=True).stdout
    if "Non-2xx" in out:
        sys.exit(f"non-2xx answers from {url}: {out}")
    return float(next(l.split()[1] for l in out.splitlines() if l.startswith("Requests/sec")))


def throughput(a, embedded):
    for node in (a, embedded):
        node.cli("fn", "create", "--name", "hello", "--code", HELLO)
        wrk_url = f"{node.router}/fn/hello"
        subprocess.run(["wrk", "-t1", f"-c{CONNECTIONS}", "-d2s", wrk_url], capture_output=True)
    results = {"cluster": [], "embedded": []}
    for _ in range(ROUNDS):
        results["embedded"].append(wrk(f"{embedded.router}/fn/hello"))
        results["cluster"].append(wrk(f"{a.router}/fn/hello"))
        print(f"  round: embedded {results['embedded'][-1]:.0f} req/s, cluster node {results['cluster'][-1]:.0f} req/s")
    median = {k: sorted(v)[len(v) // 2] for k, v in results.items()}
    print(f"throughput, wasm hello, wrk -t1 -c{CONNECTIONS} -d{DURATION}, median of {ROUNDS}:"
          f" embedded {median['embedded']:.0f} req/s, cluster node {median['cluster']:.0f} req/s,"
          f" ratio {median['cluster'] / median['embedded']:.3f} (target >= 0.95)")


def main():
    try:
        urls = start_nats(3)
        key = os.path.join(work, "secrets.key")
        with open(key, "wb") as f:
            f.write(os.urandom(32))
        os.chmod(key, 0o600)
        flags = lambda name: ["--cluster", urls, "--node-name", name, "--secrets-key", key]
        a = Node("a", flags("a"))
        b = Node("b", flags("b"), token_from=a)
        c = Node("c", flags("c"), token_from=a)
        print(f"{subprocess.run([FLARE, '--version'], capture_output=True, text=True).stdout.strip()}, "
              f"{os.cpu_count()} cores, 3 nats-servers and 3 nodes on loopback")
        propagation(a, c)
        failover(a, b)
        embedded = Node("e", [])
        throughput(a, embedded)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
