"""A small HTTP server with Range support (RFC 9110 §14) for images read in place, whose handler
the tests can hold or watch: it records each request, and `on_request` runs before answering."""

from __future__ import annotations

import gzip
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

RANGE = re.compile(r"bytes=(\d+)-(\d+)")


@dataclass
class Served:
    """What the server serves and what it saw."""

    root: Path
    base: str = ""
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, range
    bytes_sent: int = 0
    ranges: bool = True
    #: Answer a range with 206 and its Content-Range, but send from its start to the end of file.
    oversend: bool = False
    #: Bodies the client stopped reading (the write failed when it closed the connection).
    aborted: int = 0
    on_request: Callable[[str, str], None] | None = None
    #: path -> Location: answer 302 there (a loop, another origin...).
    redirects: dict[str, str] = field(default_factory=dict)
    #: Seconds between single bytes of a body: a server that trickles.
    trickle: float = 0.0
    #: Send each body gzip-encoded, whatever Accept-Encoding asked.
    gzip_bodies: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def hits(self, name: str, method: str = "HEAD") -> int:
        return sum(1 for m, path, _ in self.requests if m == method and path == f"/{name}")

    def inspections(self, name: str) -> int:
        """Reads of the head of `name`: one per inspection (sizing a location only asks HEAD)."""
        return sum(
            1
            for m, path, r in self.requests
            if m == "GET" and path == f"/{name}" and r and r.startswith("bytes=0-")
        )


def _handler(served: Served) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _answer(self, body: bool) -> None:
            served.requests.append((self.command, self.path, self.headers.get("Range")))
            if served.on_request is not None:
                served.on_request(self.command, self.path)
            if self.path in served.redirects:
                self.send_response(302)
                self.send_header("Location", served.redirects[self.path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            path = served.root / self.path.lstrip("/")
            if not path.is_file():
                self.send_error(404)
                return
            data = path.read_bytes()
            match = RANGE.fullmatch(self.headers.get("Range") or "") if served.ranges else None
            if match and body:
                start, end = int(match.group(1)), min(int(match.group(2)), len(data) - 1)
                chunk = data[start:] if served.oversend else data[start : end + 1]
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            else:
                chunk = data
                self.send_response(200)
            if served.gzip_bodies:
                chunk = gzip.compress(chunk)
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(chunk)))
            self.end_headers()
            if body:
                # Counted before writing: the client may read the last byte and assert before
                # this thread runs again.
                with served.lock:
                    served.bytes_sent += len(chunk)
                try:
                    if served.trickle:
                        for index in range(len(chunk)):
                            self.wfile.write(chunk[index : index + 1])
                            self.wfile.flush()
                            time.sleep(served.trickle)
                    else:
                        self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    with served.lock:
                        served.aborted += 1

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that die mid-request are what the fault tests are about


@contextmanager
def serve(root: Path) -> Iterator[Served]:
    served = Served(root)
    server = _Server(("127.0.0.1", 0), _handler(served))
    served.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
