"""A real OpenAI-compatible server on loopback that answers as the toy world's teacher and judges (so results are
checkable) and fails as a test asks: the one fake server of the HTTP reliability tests (``tests/test_reliability_*``).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from handbook.aif.rating import parse_rating_request
from handbook.core.backends import Sampling
from handbook.toy.judges import ToyJudge, ToyMTJudge
from handbook.toy.teacher import ToyTeacher


class ToyServer:
    """``mode`` (settable at any time): ``ok`` (the toy teacher / rater / MT-Bench judge answers), ``down`` (503),
    ``html`` (200 with an HTML page), ``badjson`` (200, invalid JSON), ``empty`` (200, ``choices: []``), ``nocontent``
    (200, a message without content), ``norating`` (200, a reply a judge could give that has no rating),
    ``stall`` (accepts, never answers until ``release()``), ``hold`` (waits for ``release()``, then answers ``ok``),
    ``trickle`` (sends the headers of a good reply, then its body one byte every ``trickle_seconds``), ``huge`` (a
    200 whose content is ``huge_bytes`` long), ``status:NNN`` (HTTP NNN with an OpenAI-style error body, and the
    ``Retry-After`` header ``retry_after`` when set).
    ``script`` gives the modes of the next requests, one each, before ``mode`` applies again. Every chat request's
    messages are kept."""

    def __init__(self):
        self.mode, self.script = "ok", []
        self.trickle_seconds, self.huge_bytes, self.retry_after = 1.0, 50 * 2**20, None
        self.requests: list[list[dict]] = []
        self.lock, self.released = threading.Lock(), threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, body: bytes, content_type: str = "application/json", headers=(),
                      trickle: float | None = None):
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    for name, value in headers:
                        self.send_header(name, value)
                    self.end_headers()
                    if trickle is None:
                        self.wfile.write(body)
                        return
                    self.wfile.flush()
                    for i in range(len(body)):
                        self.wfile.write(body[i:i + 1])
                        self.wfile.flush()
                        time.sleep(trickle)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first

            def do_GET(self):
                self._send(200, json.dumps({"object": "list", "data": [{"id": "toy", "object": "model"}]}).encode())

            def do_POST(self):
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                with server.lock:
                    server.requests.append(request["messages"])
                    mode = server.script.pop(0) if server.script else server.mode
                if mode in ("stall", "hold"):
                    server.released.wait(120)
                    if mode == "stall":
                        return
                    mode = "ok"
                if mode.startswith("status:"):
                    code = int(mode.split(":")[1])
                    extra = [("Retry-After", str(server.retry_after))] if server.retry_after is not None else []
                    message = f"Invalid 'messages[1].content': HTTP {code} from the test server"
                    return self._send(code, json.dumps({"error": {"message": message, "type": "invalid_request_error",
                                                                  "code": None}}).encode(), headers=extra)
                if mode == "down":
                    return self._send(503, b'{"error": {"message": "injected outage"}}')
                if mode == "html":
                    return self._send(200, b"<html><body><h1>Bad gateway</h1></body></html>", "text/html")
                if mode == "badjson":
                    return self._send(200, b'{"choices": [{"message": ')
                if mode == "empty":
                    return self._send(200, json.dumps({"id": "x", "object": "chat.completion", "created": 0,
                                                       "model": "toy", "choices": []}).encode())
                content = None if mode == "nocontent" else (
                    "I think the reply is fine." if mode == "norating" else
                    "x" * server.huge_bytes if mode == "huge" else toy_reply(request["messages"], request.get("seed")))
                self._send(200, json.dumps({
                    "id": "x", "object": "chat.completion", "created": 0, "model": request["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": content}}]}).encode(),
                           trickle=server.trickle_seconds if mode == "trickle" else None)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def release(self):
        self.released.set()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.release()
        self.server.shutdown()
        self.server.server_close()


def toy_reply(messages: list[dict], seed) -> str:
    """The toy world's answer to a request: a rating request → the toy rater, an MT-Bench judge prompt → the toy
    MT-Bench judge, anything else → the toy teacher."""
    sampling = Sampling(seed=seed)
    try:
        parse_rating_request(messages[-1]["content"])
        return ToyJudge(noise=0.0).chat([messages], sampling)[0]
    except ValueError:
        pass
    try:
        return ToyMTJudge().chat([messages], sampling)[0]
    except ValueError:
        return ToyTeacher().chat([messages], sampling)[0]


@pytest.fixture
def server():
    with ToyServer() as s:
        yield s
