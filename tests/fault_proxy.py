"""A small fault-injecting HTTP proxy for loopback tests of the HTTP backend.

It forwards requests to an upstream server (the llama.cpp server) and, by a seeded schedule,
answers a share of ``POST`` requests (and the first ``fail_first``, then the next
``stall_first``) itself with 429 / 500 / 503, or stalls them past the
client's timeout. It counts what it did and the most requests it had in flight at once.
"""

from __future__ import annotations

import random
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FaultProxy:
    def __init__(self, upstream: str, error_rate: float = 0.0, stall_rate: float = 0.0,
                 stall_seconds: float = 5.0, seed: int = 0, fail_first: int = 0, stall_first: int = 0,
                 statuses: tuple[int, ...] = (429, 500, 503)):
        self.upstream = upstream.rstrip("/")
        self.error_rate, self.stall_rate, self.stall_seconds = error_rate, stall_rate, stall_seconds
        self.fail_first = fail_first
        self.stall_first = stall_first
        self.statuses = statuses
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.counts = {"forwarded": 0, "errors": 0, "stalls": 0}
        self.in_flight = 0
        self.max_in_flight = 0
        self.seen_auth: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _forward(self, method: str):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy.lock:
                    proxy.seen_auth.append(self.headers.get("Authorization", ""))
                    fate = "forward"
                    if method == "POST":
                        if proxy.fail_first > 0:
                            proxy.fail_first -= 1
                            fate = "error"
                        elif proxy.stall_first > 0:
                            proxy.stall_first -= 1
                            fate = "stall"
                        else:
                            r = proxy.rng.random()
                            fate = ("error" if r < proxy.error_rate else
                                    "stall" if r < proxy.error_rate + proxy.stall_rate else "forward")
                    status = proxy.rng.choice(proxy.statuses)
                    # requests the client still waits for (a stalled one is abandoned at its timeout)
                    counted = fate != "stall"
                    if counted:
                        proxy.in_flight += 1
                        proxy.max_in_flight = max(proxy.max_in_flight, proxy.in_flight)
                try:
                    if fate == "error":
                        with proxy.lock:
                            proxy.counts["errors"] += 1
                        self._reply(status, b'{"error": {"message": "injected fault"}}')
                        return
                    if fate == "stall":
                        with proxy.lock:
                            proxy.counts["stalls"] += 1
                        time.sleep(proxy.stall_seconds)
                        self._reply(504, b'{"error": {"message": "stalled"}}')
                        return
                    req = urllib.request.Request(proxy.upstream + self.path, data=body, method=method,
                                                 headers={"Content-Type": "application/json"})
                    try:
                        with urllib.request.urlopen(req, timeout=120) as resp:
                            payload, code = resp.read(), resp.status
                    except urllib.error.HTTPError as e:
                        payload, code = e.read(), e.code
                    with proxy.lock:
                        proxy.counts["forwarded"] += 1
                    self._reply(code, payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout) first
                finally:
                    if counted:
                        with proxy.lock:
                            proxy.in_flight -= 1

            def _reply(self, code: int, payload: bytes):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):
                self._forward("GET")

            def do_POST(self):
                self._forward("POST")

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # the default backlog of 5 refuses a burst of connections

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
