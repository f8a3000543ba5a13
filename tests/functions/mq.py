"""A Python function for the message-queue tests: processes a message
unless it says fail; slow-* messages take 50 ms."""
import time


def main(req):
    text = req.body.decode()
    if text.startswith("fail"):
        raise ValueError("cannot process " + text)
    if text.startswith("slow"):
        time.sleep(0.05)
    print("got", text, req.headers.get("ce-type"), req.headers.get("ce-subject"))
    return "processed:" + text
