"""{{name}}: a Flare function. /?name=ada answers "Hello, ada!".

Any method is greeted: HTTP callers send GET, timer and queue triggers POST.
"""


def main(req):
    """Flare's Python worker calls this for every request.

    req has .method, .path (with the query), .query (the first value of each
    parameter), .headers (lower-case names), .body (bytes) and .json().
    Return a str, bytes, a dict or list (sent as JSON), or a tuple
    (body, status) or (body, status, headers).
    """
    name = req.query.get("name") or "world"
    print(f"greeting {name}")  # goes to `flare fn logs`
    return f"Hello, {name}!\n"
