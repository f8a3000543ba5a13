"""Says something, then dies in the way the path names (issue: a function's
last words outlive it)."""
import os
import signal
import time


def main(req):
    path = req.path.split("?")[0]
    print("last words before " + path)
    if path == "/oom":
        hog = []
        while True:
            hog.append(bytearray(8 << 20))
            for i in range(0, len(hog[-1]), 4096):
                hog[-1][i] = 1
    if path == "/kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if path == "/timeout":
        time.sleep(60)
    if path == "/log42":
        # 42 MB of log in one call, in lines of 1000 bytes.
        line = "z" * 999
        for _ in range(42 * 1000):
            print(line)
        return "logged"
    return "fine"
