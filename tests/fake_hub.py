"""A local stand-in for the Hugging Face Hub, enough for ``huggingface_hub`` to download from it.

It answers the three requests the download makes, the way huggingface.co does:

- ``POST /api/models/<repo>/paths-info/<rev>``: the file's Git LFS metadata (``lfs.oid`` is the
  sha256, ``lfs.size`` the size) — what ``HfApi.get_paths_info`` reads;
- ``HEAD /<repo>/resolve/<rev>/<path>``: ``X-Repo-Commit``, ``X-Linked-Etag`` (the sha256) and
  ``X-Linked-Size`` — what ``hf_hub_download`` checks before fetching;
- ``GET`` of the same address: the bytes.

Faults are set per file: an HTTP status with the hub's ``X-Error-Code`` (``GatedRepo``,
``RepoNotFound``, ``EntryNotFound``), published metadata that does not match the bytes, a body cut
off mid-transfer, or no LFS metadata at all. Point ``huggingface_hub`` at :attr:`FakeHub.url`
(the download's ``endpoint`` argument); nothing leaves localhost.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class HubFile:
    data: bytes
    published_sha256: str | None = None   # None: the sha256 of ``data``
    published_size: int | None = None     # None: len(data)
    lfs: bool = True
    status: int | None = None             # answer every request for this file with this status
    error_code: str | None = None         # the hub's X-Error-Code header for that status
    cut_after: int | None = None          # GET sends only this many bytes, then drops the socket

    @property
    def sha256(self) -> str:
        return self.published_sha256 or hashlib.sha256(self.data).hexdigest()

    @property
    def size(self) -> int:
        return len(self.data) if self.published_size is None else self.published_size


@dataclass
class FakeHub:
    files: dict = field(default_factory=dict)   # (repo, path) -> HubFile
    requests: list = field(default_factory=list)

    def add(self, repo: str, path: str, data: bytes, **faults) -> HubFile:
        self.files[(repo, path)] = HubFile(data, **faults)
        return self.files[(repo, path)]

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            owner = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def downloads(self) -> int:
        return sum(1 for method, path in self.requests if method == "GET" and "/resolve/" in path)


class _Handler(BaseHTTPRequestHandler):
    owner: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest output clean
        pass

    # --- routing ------------------------------------------------------------------------------
    def _find(self, repo: str, path: str) -> HubFile | None:
        return self.owner.files.get((repo, path))

    def _split_resolve(self):
        parts = unquote(self.path.split("?", 1)[0]).lstrip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return None, None
        return "/".join(parts[:2]), "/".join(parts[4:])

    def do_POST(self):
        self.owner.requests.append(("POST", self.path))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        parts = unquote(self.path.split("?", 1)[0]).lstrip("/").split("/")
        if len(parts) < 6 or parts[4] != "paths-info":
            return self._error(404, "RepoNotFound")
        repo = "/".join(parts[2:4])
        form = parse_qs(body)
        paths = form.get("paths", [])
        if not paths and body.startswith("{"):
            paths = json.loads(body).get("paths", [])
        out = []
        for p in paths:
            f = self._find(repo, p)
            if f is not None and f.status is not None:
                return self._error(f.status, f.error_code)
            if f is None:
                continue
            entry = {"type": "file", "path": p, "size": f.size, "oid": hashlib.sha1(p.encode()).hexdigest()}
            if f.lfs:
                entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": 134}
            out.append(entry)
        self._send(200, json.dumps(out).encode(), {"Content-Type": "application/json"})

    def do_HEAD(self):
        self._resolve(send_body=False)

    def do_GET(self):
        self._resolve(send_body=True)

    def _resolve(self, send_body: bool):
        self.owner.requests.append(("GET" if send_body else "HEAD", self.path))
        repo, path = self._split_resolve()
        f = self._find(repo, path) if repo else None
        if f is None:
            return self._error(404, "EntryNotFound", body=send_body)
        if f.status is not None:
            return self._error(f.status, f.error_code, body=send_body)
        headers = {"X-Repo-Commit": COMMIT, "X-Linked-Etag": f'"{f.sha256}"',
                   "ETag": f'"{f.sha256}"', "X-Linked-Size": str(f.size),
                   "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
        if not send_body:
            headers["Content-Length"] = str(len(f.data))
            return self._send(200, b"", headers, head=True)
        start = 0
        if (self.headers.get("Range") or "").startswith("bytes="):  # a resumed transfer
            start = int(self.headers["Range"][6:].split("-")[0] or 0)
            headers["Content-Range"] = f"bytes {start}-{len(f.data) - 1}/{len(f.data)}"
        end = len(f.data) if f.cut_after is None else max(start, f.cut_after)
        headers["Content-Length"] = str(len(f.data) - start)
        self._send(206 if start else 200, f.data[start:end], headers)
        if end < len(f.data):
            self.close_connection = True

    # --- answers ------------------------------------------------------------------------------
    def _error(self, status: int, code: str | None, body: bool = True):
        headers = {"Content-Type": "application/json"}
        if code:
            headers["X-Error-Code"] = code
            headers["X-Error-Message"] = f"fake hub: {code}"
        payload = json.dumps({"error": code or f"HTTP {status}"}).encode()
        self._send(status, payload if body else b"", dict(headers, **{"Content-Length": str(len(payload))}),
                   head=not body)

    def _send(self, status: int, data: bytes, headers: dict, head: bool = False):
        self.send_response(status)
        headers.setdefault("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if not head and data:
            self.wfile.write(data)
            self.wfile.flush()
