"""A Python function for the message-queue tests: processes a message
unless it says fail; slow-* messages take 50 ms; timed-* messages take
50 ms and answer with when they started and ended (CLOCK_MONOTONIC, the
same in every sandbox), so a test can see which ran side by side; nap-*
messages take 500 ms; big-N answers N bytes."""
import time


def main(req):
    text = req.body.decode()
    if text.startswith("fail"):
        raise ValueError("cannot process " + text)
    if text.startswith("timed"):
        started = time.monotonic_ns()
        time.sleep(0.05)
        return "processed:%s:%d:%d" % (text, started, time.monotonic_ns())
    if text.startswith("nap"):
        time.sleep(0.5)
        return "processed:" + text
    if text.startswith("big-"):
        return "y" * int(text[4:])
    if text.startswith("slow"):
        time.sleep(0.05)
    print("got", text, req.headers.get("ce-type"), req.headers.get("ce-subject"))
    return "processed:" + text
