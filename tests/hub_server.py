"""A stand-in for the Hugging Face hub on 127.0.0.1: serves files at /{repo}/resolve/{rev}/{name}
with the headers `huggingface_hub` reads, and can misbehave on purpose (truncate or corrupt)."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self, files: dict[tuple[str, str], bytes]):
        self.files = files
        self.mode = "ok"  # "ok" | "truncate" | "corrupt"
        self.gets = 0
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _lookup(self):
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve":
                    return None
                return hub.files.get(("/".join(parts[:2]), "/".join(parts[4:])))

            def _headers(self, body: bytes):
                self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()

            def do_HEAD(self):
                body = self._lookup()
                if body is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self._headers(body)

            def do_GET(self):
                body = self._lookup()
                if body is None:
                    self.send_error(404)
                    return
                hub.gets += 1
                start = 0
                if rng := self.headers.get("Range"):
                    start = int(rng.split("=")[1].split("-")[0])
                sent = body[start:]
                if hub.mode == "corrupt":
                    sent = bytes([sent[0] ^ 0xFF]) + sent[1:-1] + bytes([sent[-1] ^ 0xFF])
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(sent)))
                self.send_header("X-Repo-Commit", COMMIT)
                self.end_headers()
                self.wfile.write(sent[: len(sent) // 2] if hub.mode == "truncate" else sent)
                if hub.mode == "truncate":
                    self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
