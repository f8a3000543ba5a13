#!/usr/bin/env python3
"""From zero to a burst of N concurrent requests on one function.

  burst.py FUNCTION_PATH N    fire N requests at once, report the outcome

Prints the time until all were answered, latency percentiles, and how many
were refused (503). Standard library only; ROUTER in the environment.
"""
import http.client
import os
import sys
import threading
import time
import urllib.parse


def main(path, n):
    u = urllib.parse.urlparse(os.environ["ROUTER"])
    results = [None] * n
    start = threading.Barrier(n + 1)

    def one(i):
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
        c.connect()
        start.wait()
        t0 = time.perf_counter()
        try:
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            results[i] = (r.status, (time.perf_counter() - t0) * 1000)
        except Exception as e:  # a failed request is a result too
            results[i] = (str(e), (time.perf_counter() - t0) * 1000)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = (time.perf_counter() - t0) * 1000
    ok = sorted(ms for status, ms in results if status == 200)
    refused = sum(1 for status, _ in results if status == 503)
    other = [status for status, _ in results if status not in (200, 503)]

    def pct(p):
        return ok[min(len(ok) - 1, int(round(p / 100 * (len(ok) - 1))))] if ok else float("nan")

    print(f"  {n} concurrent requests to {path}: all answered in {wall:.0f} ms")
    print(f"    200: {len(ok)}   503 (refused): {refused}   other: {len(other)} {other[:3]}")
    print(f"    latency of the 200s: p50 {pct(50):.0f} ms  p90 {pct(90):.0f} ms  p99 {pct(99):.0f} ms  max {pct(100):.0f} ms")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
