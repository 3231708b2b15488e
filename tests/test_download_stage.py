"""The download stage end to end: the real-archive path against a local HTTP server, the
synthetic path, and what an interrupted run leaves behind (nothing)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from archive_server import PetServer, evil_member, make_tar, oxford_archives

from petvision import config
from petvision.core.errors import DataError, DownloadError
from petvision.data import layout
from petvision.download import run_download


def _archive_override(archives: dict[str, bytes]) -> str:
    entries = ",".join(
        f"{{name:{name},size:{len(data)},sha256:{hashlib.sha256(data).hexdigest()}}}"
        for name, data in archives.items()
    )
    return f"data.oxford_pets.archives=[{entries}]"


def oxford_overrides(
    tmp_path: Path, server: PetServer, archives: dict[str, bytes], mirrors: list[str] | None = None
) -> list[str]:
    mirrors = mirrors or [server.url()]
    return [
        "data.source=oxford_pets",
        f"paths.raw={tmp_path / 'raw' / 'pets'}",
        f"paths.downloads={tmp_path / 'downloads'}",
        "data.oxford_pets.mirrors=[" + ",".join(f"'{m}'" for m in mirrors) + "]",
        _archive_override(archives),
        "data.oxford_pets.retries=1",
        "data.oxford_pets.backoff_s=0.01",
        "data.oxford_pets.timeout_s=5",
    ]


def serve(server: PetServer, archives: dict[str, bytes], prefix: str = "/pets/") -> None:
    for name, data in archives.items():
        server.files[prefix + name] = data


def test_oxford_pets_end_to_end(pet_server, tmp_path):
    archives = oxford_archives()
    serve(pet_server, archives)
    cfg = config.load(
        config.compose(
            oxford_overrides(
                tmp_path, pet_server, archives, [pet_server.url("/gone/"), pet_server.url()]
            )
        )
    )

    out = run_download(cfg)

    assert out == tmp_path / "raw" / "pets"
    marker = json.loads((out / layout.COMPLETE_MARKER).read_text())
    assert marker["source"] == "oxford_pets" and set(marker["archives"]) == set(archives)
    found = layout.scan(out)
    assert found.pairs == sorted(["Abyssinian_1", "Abyssinian_2", "beagle_1", "beagle_2"])
    assert (
        "images/Abyssinian_100.mat" in found.ignored
        and "annotations/trimaps/._Abyssinian_1.png" in found.ignored
    )
    assert (out / "annotations" / "trainval.txt").is_file() and (
        out / "annotations" / "xmls"
    ).is_dir()
    # Only the finished output beside it, and the archives kept in the cache for the next run.
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["pets"]
    assert sorted(p.name for p in (tmp_path / "downloads").iterdir()) == sorted(archives)

    # A rerun rebuilds the output from the verified cache without touching the network.
    asked = len(pet_server.requests)
    run_download(cfg)
    assert len(pet_server.requests) == asked
    assert layout.Layout(out).is_complete()


def test_interrupted_extraction_leaves_no_output_and_no_marker(pet_server, tmp_path):
    archives = oxford_archives()
    # Verifies (the checksum is of these very bytes) but breaks off in the middle when extracted.
    tar_bytes = gzip.decompress(archives["images.tar.gz"])
    archives["annotations.tar.gz"] = gzip.compress(tar_bytes)[:-200]
    serve(pet_server, archives)
    cfg = config.load(config.compose(oxford_overrides(tmp_path, pet_server, archives)))

    with pytest.raises(DataError, match="annotations.tar.gz"):
        run_download(cfg)

    raw = tmp_path / "raw"
    assert not (raw / "pets").exists()
    assert list(raw.iterdir()) == []  # no half-built temporary folder either
    assert not list(tmp_path.rglob(layout.COMPLETE_MARKER))


def test_failed_download_leaves_no_output(pet_server, tmp_path):
    archives = oxford_archives()  # not served: every request is a 404
    cfg = config.load(config.compose(oxford_overrides(tmp_path, pet_server, archives)))
    with pytest.raises(DownloadError, match=f"{pet_server.url()}images.tar.gz"):
        run_download(cfg)
    assert not (tmp_path / "raw" / "pets").exists()


def test_archive_without_the_pet_layout_is_refused(pet_server, tmp_path):
    archives = {"images.tar.gz": make_tar({"photos/cat.jpg": b"jpg"})}
    serve(pet_server, archives)
    cfg = config.load(config.compose(oxford_overrides(tmp_path, pet_server, archives)))
    with pytest.raises(
        DataError, match="images.tar.gz: no images, annotations/trimaps, annotations/list.txt"
    ):
        run_download(cfg)
    assert not (tmp_path / "raw" / "pets").exists()


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink", "device"])
def test_a_hostile_archive_is_refused_and_the_stage_leaves_no_output(pet_server, tmp_path, kind):
    """The images extract fine, then annotations.tar.gz holds one unsafe member: the stage fails
    naming it, and neither the images already extracted nor anything outside is left behind."""
    import io
    import tarfile

    outside = tmp_path / "outside"
    outside.mkdir()
    archives = oxford_archives()
    member = evil_member(kind, outside)
    payload = b"pwned"
    member.size = len(payload) if member.isfile() else 0
    buf = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(archives["annotations.tar.gz"])) as good,
        tarfile.open(fileobj=buf, mode="w:gz") as tar,
    ):
        for info in good.getmembers():
            tar.addfile(info, good.extractfile(info))
        tar.addfile(member, io.BytesIO(payload) if member.isfile() else None)
    archives["annotations.tar.gz"] = buf.getvalue()
    serve(pet_server, archives)
    cfg = config.load(config.compose(oxford_overrides(tmp_path, pet_server, archives)))

    with pytest.raises(DataError, match="annotations.tar.gz") as err:
        run_download(cfg)
    assert repr(member.name) in str(err.value)
    assert list((tmp_path / "raw").iterdir()) == []  # no output, no half-built temporary folder
    assert list(outside.iterdir()) == []
    assert not list(tmp_path.rglob(layout.COMPLETE_MARKER))


SYNTHETIC_TINY = [
    "data.synthetic.num_images=12",
    "data.synthetic.min_side=64",
    "data.synthetic.max_side=80",
    "data.segmentation.val_count=2",
    "data.classification.train_count=4",
    "data.classification.val_count=2",
    "data.classification.test_count=2",
]


def test_synthetic_source_writes_a_complete_dataset(tmp_path):
    cfg = config.load(config.compose([*SYNTHETIC_TINY, f"paths.raw={tmp_path / 'raw' / 'pets'}"]))
    out = run_download(cfg)
    assert layout.Layout(out).is_complete()
    assert json.loads((out / layout.COMPLETE_MARKER).read_text())["source"] == "synthetic"
    assert len(layout.scan(out).pairs) == 12
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["pets"]


# --------------------------------------------------------------------------- the command line


def _run_stage(tmp_path: Path, overrides: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "petvision.download",
            *overrides,
            f"hydra.run.dir={tmp_path / 'hydra'}",
            "hydra.output_subdir=null",
        ],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_command_line_downloads_and_fails_with_one_clear_line(pet_server, tmp_path):
    archives = oxford_archives()
    serve(pet_server, archives)
    done = _run_stage(tmp_path, oxford_overrides(tmp_path, pet_server, archives))
    assert done.returncode == 0, done.stderr
    assert layout.Layout(tmp_path / "raw" / "pets").is_complete()

    bad = {
        "images.tar.gz": archives["images.tar.gz"][:-1] + b"!"
    }  # one byte off: the checksum will not match
    serve(pet_server, bad, prefix="/bad/")
    failed = _run_stage(
        tmp_path / "second",
        oxford_overrides(tmp_path / "second", pet_server, archives, [pet_server.url("/bad/")]),
    )
    assert failed.returncode == 2
    error_lines = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert (
        len(error_lines) == 1
        and "sha256 mismatch" in error_lines[0]
        and "Traceback" not in failed.stderr
    )
    assert not (tmp_path / "second" / "raw" / "pets").exists()
