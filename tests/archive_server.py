"""A real HTTP server on 127.0.0.1 that can misbehave on request, and tiny stand-ins for the
Oxford-IIIT Pet archives: what the download tests (test_fetch.py, test_download_stage.py,
test_reliability.py) serve and extract. Its fixtures are registered in conftest.py."""

from __future__ import annotations

import hashlib
import io
import re
import socket
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from petvision.data.fetch import Archive, RetryPolicy

FAST = RetryPolicy(retries=2, backoff_s=0.01, timeout_s=5.0)


# --------------------------------------------------------------------------- archives


def jpeg_bytes(seed: int) -> bytes:
    # Noise does not compress, so the archive is large enough to be cut in the middle.
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def png_bytes(seed: int) -> bytes:
    trimap = np.random.default_rng(seed).integers(1, 4, (48, 48), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(trimap).save(buf, format="PNG")
    return buf.getvalue()


def make_tar(members: dict[str, bytes], gzip: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gzip else "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


STEMS = ["Abyssinian_1", "Abyssinian_2", "beagle_1", "beagle_2"]


def oxford_archives() -> dict[str, bytes]:
    """Tiny stand-ins for images.tar.gz and annotations.tar.gz, with the real ones' strays:
    a .mat file in images/, AppleDouble ``._*`` files, xmls/, and a plain tar under a .gz name."""
    images = {f"images/{s}.jpg": jpeg_bytes(i) for i, s in enumerate(STEMS)}
    images["images/Abyssinian_100.mat"] = b"MATLAB 5.0 MAT-file"
    lines = "".join(f"{s} 1 {1 if s[0].isupper() else 2} 1\n" for s in STEMS)
    annotations = {
        "annotations/list.txt": ("#Image CLASS-ID SPECIES BREED ID\n" + lines).encode(),
        "annotations/trainval.txt": lines.encode(),
        "annotations/test.txt": b"",
        "annotations/._list.txt": b"\x00\x05\x16\x07AppleDouble",
        "annotations/xmls/Abyssinian_1.xml": b"<annotation/>",
        **{f"annotations/trimaps/{s}.png": png_bytes(i) for i, s in enumerate(STEMS)},
        "annotations/trimaps/._Abyssinian_1.png": b"\x00\x05\x16\x07AppleDouble",
    }
    return {
        "images.tar.gz": make_tar(images),
        "annotations.tar.gz": make_tar(annotations, gzip=False),
    }


def archive_of(name: str, data: bytes) -> Archive:
    return Archive(name, len(data), hashlib.sha256(data).hexdigest())


# --------------------------------------------------------------------------- server


@dataclass
class PetServer:
    """Serves ``files`` (URL path -> bytes) with Range support; the other fields make it misbehave."""

    files: dict[str, bytes] = field(default_factory=dict)
    drop_after_once: dict[str, int] = field(
        default_factory=dict
    )  # path -> bytes sent before hanging up
    status_once: dict[str, int] = field(
        default_factory=dict
    )  # path -> status sent on the next request
    status_always: dict[str, int] = field(default_factory=dict)
    stall_once: dict[str, float] = field(
        default_factory=dict
    )  # path -> seconds of silence before answering
    ignore_range: bool = False
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    port: int = 0

    def url(self, prefix: str = "/pets/") -> str:
        return f"http://127.0.0.1:{self.port}{prefix}"

    def paths_requested(self) -> list[str]:
        return [p for p, _ in self.requests]


def _handler_for(state: PetServer) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:
            path, range_header = self.path, self.headers.get("Range")
            with lock:
                state.requests.append((path, range_header))
                status = state.status_always.get(path) or state.status_once.pop(path, None)
                drop_after = state.drop_after_once.pop(path, None)
                stall = state.stall_once.pop(path, None)
            if stall:
                time.sleep(stall)
            data = state.files.get(path)
            if status or data is None:
                self._send_empty(status or 404)
                return
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
            if match and not state.ignore_range:
                start = int(match.group(1))
                if start >= len(data):
                    self._send_empty(416, {"Content-Range": f"bytes */{len(data)}"})
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Type", "application/x-gzip")
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if drop_after is not None:
                self.wfile.write(body[:drop_after])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            self.wfile.write(body)

        def _send_empty(self, status: int, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


@pytest.fixture
def pet_server() -> Iterator[PetServer]:
    state = PetServer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(state))
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def served(pet_server: PetServer) -> tuple[PetServer, Archive, bytes]:
    data = oxford_archives()["images.tar.gz"]
    pet_server.files["/pets/images.tar.gz"] = data
    return pet_server, archive_of("images.tar.gz", data), data


def evil_member(kind: str, outside: Path) -> tarfile.TarInfo:
    if kind == "dotdot":
        info = tarfile.TarInfo("images/../../outside/evil.txt")
    elif kind == "absolute":
        info = tarfile.TarInfo(str(outside / "evil.txt"))
    elif kind == "symlink":
        info = tarfile.TarInfo("images/link")
        info.type, info.linkname = tarfile.SYMTYPE, str(outside)
    elif kind == "hardlink":
        info = tarfile.TarInfo("images/hard")
        info.type, info.linkname = tarfile.LNKTYPE, "images/Abyssinian_1.jpg"
    elif kind == "device":
        info = tarfile.TarInfo("images/null")
        info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    return info
