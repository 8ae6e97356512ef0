"""Start a real Chroma server (the installed ``chroma`` command) on loopback, for tests and benches."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from cluster_retriever.store.clients import make_client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def chroma_server(data_dir: Path, timeout: float = 60.0) -> Iterator[int]:
    """Run ``chroma run --path DATA --host 127.0.0.1 --port PORT`` until the block ends;
    yields the port once the heartbeat answers, and stops the server by its process id."""
    chroma = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
    port = free_port()
    process = subprocess.Popen(
        [chroma, "run", "--path", str(data_dir), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                make_client(host="127.0.0.1", port=port).heartbeat()
                break
            except Exception as exc:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the Chroma server did not start") from exc
                time.sleep(0.3)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)
