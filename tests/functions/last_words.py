"""Says something, then dies in the way the path names (issue: a function's
last words outlive it)."""
import os
import signal
import threading
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
    if path == "/leftover":
        # A thread that outlives its call and prints while another runs.
        def later():
            time.sleep(0.3)
            print("leftover line")
        threading.Thread(target=later).start()
        return "started"
    if path == "/thread":
        # A thread that prints and is waited for: the call's own output.
        t = threading.Thread(target=lambda: print("from a thread"))
        t.start()
        t.join()
        return "joined"
    if path == "/slow":
        time.sleep(1)
        return "slow"
    return "fine"
