"""data.source=local: your own copy of Oxford-IIIT Pet, extracted or as the two archives, with
the real set's quirks; checked, verified, nothing over the network; DVC reruns when it changes."""

from __future__ import annotations

import hashlib
import json
import tarfile

import numpy as np
import pytest
from conftest import write_quirky_image
from project_copy import dvc, make_project, tiny_overrides

QUIRKS = {"png_as_jpg": 0, "gif_as_jpg": 1, "rgba": 2, "cmyk": 3, "grayscale": 4}


@pytest.fixture
def no_network(monkeypatch):
    import requests

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access: {args} {kwargs}")

    monkeypatch.setattr(requests, "get", refuse)
    monkeypatch.setattr(requests.Session, "request", refuse)


def own_copy(folder, make_config):
    """A generated dataset in the Oxford layout, then given the real set's quirks: PNG/GIF/RGBA/
    CMYK/greyscale images under .jpg names, a corrupt JPEG, .mat files in images/, AppleDouble
    twins under annotations/, an image without a trimap."""
    from petvision.data import layout, synthetic

    cfg = make_config(*tiny_overrides())
    synthetic.generate(folder, cfg.data.synthetic, workers=1)
    lay = layout.Layout(folder)
    stems = layout.scan(folder).pairs
    rng = np.random.default_rng(0)
    for quirk, i in QUIRKS.items():
        from petvision.data import images

        rgb, _ = images.load_rgb(lay.image_path(stems[i]))
        write_quirky_image(lay.image_path(stems[i]), rgb, quirk)
    corrupt = lay.image_path(stems[5]).read_bytes()
    lay.image_path(stems[5]).write_bytes(corrupt[: len(corrupt) // 2])
    (lay.images_dir / "Abyssinian_100.mat").write_bytes(rng.bytes(64))
    for stem in stems[:3]:
        (lay.trimaps_dir / f"._{stem}.png").write_bytes(b"\x00\x05\x16\x07")
    lay.trimap_path(stems[6]).unlink()
    return cfg, stems


def test_an_extracted_copy_with_the_real_sets_quirks_is_used_as_it_is(
    make_config, tmp_path, no_network
):
    from petvision.download import run_download
    from petvision.preprocess import run_preprocess

    mine = tmp_path / "my_pets"
    _, stems = own_copy(mine, make_config)
    cfg = make_config(*tiny_overrides(), "data.source=local", f"data.local.path={mine}")
    out = run_download(cfg)
    assert json.loads((out / ".complete").read_text()) == {
        "source": "local",
        "path": str(mine),
        "kind": "extracted",
    }
    assert (out / "images" / f"{stems[0]}.jpg").read_bytes() == (
        mine / "images" / f"{stems[0]}.jpg"
    ).read_bytes()
    report = run_preprocess(cfg)
    assert report["skipped"] == {
        "image_without_trimap": 1,
        "appledouble": 3,
        "mat_file": 1,
        "undecodable_image": 1,
    }
    assert report["converted"]["png_as_jpg"] == 1 and report["converted"]["gif_as_jpg+palette"] == 1
    assert report["converted"]["jpeg+cmyk"] == 1 and report["converted"]["jpeg+grayscale"] == 1


def test_archives_are_verified_before_they_are_extracted(make_config, tmp_path, no_network):
    from petvision.core.errors import DataError
    from petvision.download import run_download
    from petvision.preprocess import run_preprocess

    extracted = tmp_path / "extracted"
    own_copy(extracted, make_config)
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    archives = []
    for i, (name, folder) in enumerate(
        (("images.tar.gz", "images"), ("annotations.tar.gz", "annotations"))
    ):
        with tarfile.open(shelf / name, "w:gz") as tar:
            tar.add(extracted / folder, arcname=folder)
        data = (shelf / name).read_bytes()
        archives += [
            f"data.oxford_pets.archives.{i}.size={len(data)}",
            f"data.oxford_pets.archives.{i}.sha256={hashlib.sha256(data).hexdigest()}",
        ]
    cfg = make_config(*tiny_overrides(), "data.source=local", f"data.local.path={shelf}", *archives)
    out = run_download(cfg)
    assert json.loads((out / ".complete").read_text())["kind"] == "archives"
    assert (
        run_preprocess(cfg)["usable_pairs"]
        == run_preprocess(
            make_config(*tiny_overrides(), "data.source=local", f"data.local.path={extracted}")
        )["usable_pairs"]
    )

    # one flipped byte: refused, naming the archive, and the previous output is left as it was
    data = bytearray((shelf / "annotations.tar.gz").read_bytes())
    data[100] ^= 0xFF
    (shelf / "annotations.tar.gz").write_bytes(bytes(data))
    with pytest.raises(
        DataError, match=r"annotations.tar.gz: sha256 mismatch.*nothing was extracted"
    ):
        run_download(cfg)
    assert json.loads((out / ".complete").read_text())["kind"] == "archives"


def test_a_folder_that_is_not_the_dataset_is_named_with_what_is_missing(make_config, tmp_path):
    from petvision.core.errors import ConfigError, DataError
    from petvision.download import run_download

    folder = tmp_path / "half"
    (folder / "images").mkdir(parents=True)
    cfg = make_config(*tiny_overrides(), "data.source=local", f"data.local.path={folder}")
    with pytest.raises(DataError, match=r"no annotations/trimaps, annotations/list.txt"):
        run_download(cfg)
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "images.tar.gz").write_bytes(b"x")
    cfg = make_config(
        *tiny_overrides(), "data.source=local", f"data.local.path={tmp_path / 'only'}"
    )
    with pytest.raises(DataError, match=r"holds images.tar.gz but not annotations.tar.gz"):
        run_download(cfg)
    with pytest.raises(DataError, match="no such folder"):
        run_download(
            make_config(*tiny_overrides(), "data.source=local", f"data.local.path={tmp_path / 'x'}")
        )
    with pytest.raises(ConfigError, match="data.local.path"):
        make_config(*tiny_overrides(), "data.source=local", "data.local.path=")
    assert not cfg.paths.resolve("raw").exists()


@pytest.mark.slow
def test_dvc_reruns_from_download_when_the_local_folder_changes(make_config, tmp_path):
    mine = tmp_path / "my_pets"
    own_copy(mine, make_config)
    project = make_project(tmp_path / "project")
    # the default source does not need the folder, but DVC's dependency on it must exist
    dvc(project, "status", "download")
    dvc(
        project,
        "exp",
        "run",
        "--set-param",
        "data.source=local",
        "--set-param",
        f"data.local.path={mine}",
        "download",
        "preprocess",
        timeout=600,
    )
    assert "download" not in dvc(project, "status", "download").stdout
    write_quirky_image(mine / "images" / "Extra_1.jpg", np.zeros((70, 70, 3), np.uint8), "jpeg")
    status = dvc(project, "status", "download").stdout
    assert "changed deps" in status and str(mine) in status
