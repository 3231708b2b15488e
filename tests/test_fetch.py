"""petvision.data.fetch against a real HTTP server on 127.0.0.1 that can misbehave on request
(tests/archive_server.py)."""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import pytest
from archive_server import FAST, evil_member, oxford_archives

from petvision.core.errors import DataError, DownloadError
from petvision.data import archives, fetch
from petvision.data.fetch import Archive, RetryPolicy

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


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink", "device"])
def test_unsafe_members_are_refused_by_name(tmp_path, kind):
    outside = tmp_path / "outside"
    outside.mkdir()
    member = evil_member(kind, outside)
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
