"""petvision.data.fetch against a real HTTP server on 127.0.0.1 that can misbehave on request.

The server, the archive builders and the ``pet_server`` fixture are reused by
tests/test_download_stage.py.
"""

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

from petvision.core.errors import DataError, DownloadError
from petvision.data import archives, fetch
from petvision.data.fetch import Archive, RetryPolicy

FAST = RetryPolicy(retries=2, backoff_s=0.01, timeout_s=5.0)


# --------------------------------------------------------------------------- archives


def _jpeg(seed: int) -> bytes:
    # Noise does not compress, so the archive is large enough to be cut in the middle.
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _png(seed: int) -> bytes:
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
    images = {f"images/{s}.jpg": _jpeg(i) for i, s in enumerate(STEMS)}
    images["images/Abyssinian_100.mat"] = b"MATLAB 5.0 MAT-file"
    lines = "".join(f"{s} 1 {1 if s[0].isupper() else 2} 1\n" for s in STEMS)
    annotations = {
        "annotations/list.txt": ("#Image CLASS-ID SPECIES BREED ID\n" + lines).encode(),
        "annotations/trainval.txt": lines.encode(),
        "annotations/test.txt": b"",
        "annotations/._list.txt": b"\x00\x05\x16\x07AppleDouble",
        "annotations/xmls/Abyssinian_1.xml": b"<annotation/>",
        **{f"annotations/trimaps/{s}.png": _png(i) for i, s in enumerate(STEMS)},
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


# --------------------------------------------------------------------------- download


def test_clean_download_verifies_and_leaves_no_part(served, tmp_path):
    server, archive, data = served
    path = fetch.fetch_archive(archive, [server.url()], tmp_path, FAST)
    assert path == tmp_path / "images.tar.gz"
    assert path.read_bytes() == data
    assert not (tmp_path / "images.tar.gz.part").exists()
    assert server.requests == [("/pets/images.tar.gz", None)]


def test_mirror_without_trailing_slash_still_finds_the_file(served, tmp_path):
    server, archive, data = served
    path = fetch.fetch_archive(archive, [server.url().rstrip("/")], tmp_path, FAST)
    assert path.read_bytes() == data


def test_dropped_connection_resumes_with_a_range_request(served, tmp_path):
    server, archive, data = served
    cut = len(data) // 2
    server.drop_after_once["/pets/images.tar.gz"] = cut
    path = fetch.fetch_archive(archive, [server.url()], tmp_path, FAST)
    assert server.requests == [
        ("/pets/images.tar.gz", None),
        ("/pets/images.tar.gz", f"bytes={cut}-"),
    ]
    assert path.read_bytes() == data
    fetch.verify_file(path, archive)


def test_partial_file_from_an_earlier_run_is_resumed(served, tmp_path):
    server, archive, data = served
    (tmp_path / "images.tar.gz.part").write_bytes(data[:1000])
    path = fetch.fetch_archive(archive, [server.url()], tmp_path, FAST)
    assert server.requests == [("/pets/images.tar.gz", "bytes=1000-")]
    assert path.read_bytes() == data


def test_server_ignoring_range_restarts_cleanly(served, tmp_path):
    server, archive, data = served
    server.ignore_range = True
    server.drop_after_once["/pets/images.tar.gz"] = len(data) // 2
    path = fetch.fetch_archive(archive, [server.url()], tmp_path, FAST)
    assert (
        server.requests[1][1] == f"bytes={len(data) // 2}-"
    )  # asked to resume, got the whole file
    assert path.read_bytes() == data  # and did not append it to the first half


def test_checksum_mismatch_is_a_clear_error_and_leaves_no_file(served, tmp_path):
    server, archive, data = served
    wrong = Archive(archive.name, archive.size, "0" * 64)
    with pytest.raises(DownloadError) as err:
        fetch.fetch_archive(wrong, [server.url()], tmp_path, FAST)
    message = str(err.value)
    assert "images.tar.gz" in message and "sha256" in message
    assert "0" * 64 in message and archive.sha256 in message  # expected and actual
    assert (
        sorted(p.name for p in tmp_path.iterdir()) == []
    )  # neither the final name nor a resumable .part


def test_cached_archive_with_wrong_checksum_is_downloaded_again(served, tmp_path):
    server, archive, data = served
    (tmp_path / "images.tar.gz").write_bytes(b"x" * archive.size)
    path = fetch.fetch_archive(archive, [server.url()], tmp_path, FAST)
    assert server.paths_requested() == ["/pets/images.tar.gz"]
    assert path.read_bytes() == data


def test_verified_cache_is_used_without_a_request(served, tmp_path):
    server, archive, data = served
    (tmp_path / "images.tar.gz").write_bytes(data)
    fetch.fetch_archive(archive, [server.url()], tmp_path, FAST)
    assert server.requests == []


def test_complete_part_is_verified_and_renamed_without_a_request(served, tmp_path):
    server, archive, data = served
    (tmp_path / "images.tar.gz.part").write_bytes(data)
    path = fetch.fetch_archive(archive, [server.url()], tmp_path, FAST)
    assert server.requests == [] and path.read_bytes() == data


@pytest.mark.parametrize("status", [404, 403])
def test_missing_file_is_not_retried_and_names_the_url(served, tmp_path, status):
    server, archive, _ = served
    server.status_always["/pets/images.tar.gz"] = status
    with pytest.raises(DownloadError) as err:
        fetch.fetch_archive(archive, [server.url()], tmp_path, FAST)
    assert f"{server.url()}images.tar.gz" in str(err.value) and str(status) in str(err.value)
    assert len(server.requests) == 1
    assert not (tmp_path / "images.tar.gz").exists()


def test_404_on_first_mirror_falls_back_to_the_second(served, tmp_path):
    server, archive, data = served
    path = fetch.fetch_archive(archive, [server.url("/gone/"), server.url()], tmp_path, FAST)
    assert server.paths_requested() == ["/gone/images.tar.gz", "/pets/images.tar.gz"]
    assert path.read_bytes() == data


def test_all_mirrors_failing_names_each_url(served, tmp_path):
    server, archive, _ = served
    with pytest.raises(DownloadError) as err:
        fetch.fetch_archive(archive, [server.url("/a/"), server.url("/b/")], tmp_path, FAST)
    assert f"{server.url('/a/')}images.tar.gz" in str(err.value)
    assert f"{server.url('/b/')}images.tar.gz" in str(err.value)


def test_unknown_host_moves_to_the_next_mirror_without_retrying(served, tmp_path, caplog):
    server, archive, data = served
    dead = "http://pets.invalid/data/"  # .invalid never resolves (RFC 6761)
    slow = RetryPolicy(retries=3, backoff_s=0.01, timeout_s=5)
    with caplog.at_level("WARNING", logger="petvision.data.fetch"):
        path = fetch.fetch_archive(archive, [dead, server.url()], tmp_path, slow)
    assert path.read_bytes() == data
    about_dead = [r.getMessage() for r in caplog.records if "pets.invalid" in r.getMessage()]
    assert len(about_dead) == 1 and "cannot resolve the host" in about_dead[0]


def test_server_error_once_is_retried(served, tmp_path):
    server, archive, data = served
    server.status_once["/pets/images.tar.gz"] = 500
    path = fetch.fetch_archive(archive, [server.url()], tmp_path, FAST)
    assert server.paths_requested() == ["/pets/images.tar.gz"] * 2
    assert path.read_bytes() == data


def test_persistent_server_error_gives_up_after_the_configured_retries(served, tmp_path):
    server, archive, _ = served
    server.status_always["/pets/images.tar.gz"] = 503
    with pytest.raises(DownloadError) as err:
        fetch.fetch_archive(
            archive, [server.url()], tmp_path, RetryPolicy(retries=3, backoff_s=0.01, timeout_s=5)
        )
    assert len(server.requests) == 4  # the first try and three retries
    assert "images.tar.gz" in str(err.value) and "503" in str(err.value)


def test_timeout_is_retried(served, tmp_path):
    server, archive, data = served
    server.stall_once["/pets/images.tar.gz"] = 1.0
    path = fetch.fetch_archive(
        archive, [server.url()], tmp_path, RetryPolicy(retries=2, backoff_s=0.01, timeout_s=0.2)
    )
    assert len(server.requests) == 2
    assert path.read_bytes() == data


def test_server_file_of_the_wrong_size_is_refused_before_downloading(served, tmp_path):
    server, archive, _ = served
    bigger = Archive(archive.name, archive.size + 10, archive.sha256)
    with pytest.raises(
        DownloadError, match=rf"serves {archive.size:,} bytes, expected {archive.size + 10:,}"
    ):
        fetch.fetch_archive(bigger, [server.url()], tmp_path, FAST)
    assert not (tmp_path / "images.tar.gz").exists()


def test_not_enough_disk_space_is_reported_before_any_request(served, tmp_path):
    server, archive, _ = served
    huge = Archive(archive.name, 1 << 60, archive.sha256)
    with pytest.raises(DownloadError, match=re.escape(str(tmp_path))):
        fetch.fetch_archive(huge, [server.url()], tmp_path, FAST)
    assert server.requests == []


# --------------------------------------------------------------------------- extraction


def test_extracts_the_oxford_layout_even_from_a_plain_tar_named_gz(tmp_path):
    archive = tmp_path / "annotations.tar.gz"
    archive.write_bytes(oxford_archives()["annotations.tar.gz"])  # written as plain tar
    target = tmp_path / "out"
    count = archives.safe_extract(archive, target)
    assert count == 10
    assert (target / "annotations/list.txt").is_file()
    assert (target / "annotations/trimaps/._Abyssinian_1.png").is_file()
    assert (target / "annotations/trimaps/beagle_2.png").is_file()


def _evil_member(kind: str, outside: Path) -> tarfile.TarInfo:
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


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink", "device"])
def test_unsafe_members_are_refused_by_name(tmp_path, kind):
    outside = tmp_path / "outside"
    outside.mkdir()
    member = _evil_member(kind, outside)
    payload = b"pwned"
    member.size = 0 if not member.isfile() else len(payload)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        good = tarfile.TarInfo("images/Abyssinian_1.jpg")
        good.size = 3
        tar.addfile(good, io.BytesIO(b"jpg"))
        tar.addfile(member, io.BytesIO(payload) if member.isfile() else None)
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(buf.getvalue())
    target = tmp_path / "target" / "pets"

    with pytest.raises(DataError) as err:
        archives.safe_extract(archive, target)
    assert repr(member.name) in str(err.value) and "evil.tar.gz" in str(err.value)
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "target").iterdir()) == ["pets"]
    assert (
        not (target / "images" / Path(member.name).name).exists()
        and not (target / "images" / "link").is_symlink()
    )


def test_corrupt_archive_is_a_data_error_naming_it(tmp_path):
    data = oxford_archives()["images.tar.gz"]
    archive = tmp_path / "images.tar.gz"
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="images.tar.gz: corrupt"):
        archives.safe_extract(archive, tmp_path / "out")
