"""A loopback HTTP server in a thread, for the transport and reading tests: a directory served as is
(http.server's own handler), or a handler a test writes to misbehave (cut bodies, errors)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path


class QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no request lines on the test output
        pass


@contextlib.contextmanager
def serve(directory: Path | None = None, handler: type | None = None) -> Iterator[str]:
    """Serve `directory` (or run `handler`) on 127.0.0.1 on a free port; yields the base URL."""
    if handler is None:
        handler = functools.partial(QuietFiles, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
