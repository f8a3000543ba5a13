"""A function whose import takes a second: specializing an instance of it
is slow enough for a test to cut requests off while it happens."""
import time

time.sleep(1)


def main(req):
    if req.path.split("?")[0] == "/sleep":
        time.sleep(float(req.query.get("s", "0.3")))
        return "slept"
    return "ok"
