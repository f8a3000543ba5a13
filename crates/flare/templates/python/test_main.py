"""Tests for main.py: python3 -m unittest"""
import contextlib
import io
import json
import unittest
import urllib.parse

import main


class FakeRequest:
    """What Flare's worker passes to main(): the same attributes."""

    def __init__(self, path="/", method="GET", headers=None, body=b""):
        self.method = method
        self.path = path
        query = urllib.parse.urlsplit(path).query
        self.query = {k: v[0] for k, v in urllib.parse.parse_qs(query).items()}
        self.headers = {k.lower(): v for k, v in (headers or {}).items()}
        self.body = body

    def json(self):
        return json.loads(self.body or b"null")


def call(req):
    """Runs main(req); returns its result and what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = main.main(req)
    return result, out.getvalue()


class MainTest(unittest.TestCase):
    def test_greets_by_name(self):
        result, printed = call(FakeRequest("/?name=ada"))
        self.assertEqual(result, "Hello, ada!\n")
        self.assertEqual(printed, "greeting ada\n")

    def test_greets_the_world_by_default(self):
        self.assertEqual(call(FakeRequest("/"))[0], "Hello, world!\n")
        self.assertEqual(call(FakeRequest("/?name="))[0], "Hello, world!\n")

    def test_decodes_the_name(self):
        self.assertEqual(call(FakeRequest("/?name=Ada%20L+B"))[0], "Hello, Ada L B!\n")

    def test_greets_a_post_too(self):
        result, printed = call(FakeRequest("/?name=ada", method="POST"))
        self.assertEqual(result, "Hello, ada!\n")
        self.assertEqual(printed, "greeting ada\n")


if __name__ == "__main__":
    unittest.main()
