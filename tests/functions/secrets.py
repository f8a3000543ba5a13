"""What a function sees of its secrets and config (tests/access.rs)."""
import os


def main(req):
    path = req.path.split("?")[0]
    if path == "/env":
        name = req.query.get("name", "")
        return {"value": os.environ.get(name)}
    if path == "/file":
        with open(req.query.get("path", ""), "rb") as f:
            data = f.read()
        return {"hex": data.hex(), "mode": oct(os.stat(req.query["path"]).st_mode & 0o777)}
    if path == "/fail":
        raise RuntimeError("failing on purpose")
    return "ok"
