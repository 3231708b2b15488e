"""Stage preprocess: quirks of the real data, pairing, splits, memory, atomicity.

Every test image encodes its identity: a 4x4 grid of blocks, light or dark, from the bits of a
number tied to its stem; its trimap encodes the same number as pet/background blocks. After
preprocessing, each row's image, mask and index.json stem must all name the same number.
"""

from __future__ import annotations

import hashlib
import json
import random
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from conftest import QUIRKS, write_quirky_image
from PIL import Image

from petvision import preprocess
from petvision.core.errors import ConfigError, DataError
from petvision.data import checks, images, layout, npy_dataset, splits

BITS = 15  # blocks 0..14 carry the identity; block 15 is the trimap's border class


def identity(stem: str) -> int:
    """A number for each stem, unique within a test (a bijection on 15 bits of a stable hash)."""
    return int(hashlib.sha256(stem.encode()).hexdigest(), 16) % (1 << BITS)


def bit_grid(number: int) -> np.ndarray:
    bits = [(number >> i) & 1 for i in range(BITS)] + [0]
    return np.array(bits, dtype=np.uint8).reshape(4, 4)


def expand(grid: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.kron(grid, np.ones((height // 4, width // 4), dtype=np.uint8))


def picture(stem: str, width: int, height: int) -> np.ndarray:
    grey = np.where(expand(bit_grid(identity(stem)), width, height) == 1, 230, 30).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def trimap(stem: str, width: int, height: int) -> np.ndarray:
    values = np.where(
        bit_grid(identity(stem)) == 1, layout.TRIMAP_PET, layout.TRIMAP_BACKGROUND
    ).astype(np.uint8)
    values[3, 3] = layout.TRIMAP_BORDER
    return expand(values, width, height)


def read_image_id(row: np.ndarray) -> int:
    block = row.shape[0] // 4
    centres = row[block // 2 :: block, block // 2 :: block].mean(axis=-1)
    return sum(int(v > 128) << i for i, v in enumerate(centres.reshape(-1)[:BITS]))


def read_mask_id(row: np.ndarray) -> int:
    block = row.shape[0] // 4
    centres = row[block // 2 :: block, block // 2 :: block, 0].reshape(-1)
    assert centres[15] == layout.TRIMAP_BORDER - 1
    return sum(int(v == layout.TRIMAP_PET - 1) << i for i, v in enumerate(centres[:BITS]))


SIDES = ((64, 64), (96, 64), (64, 128), (128, 96))


def write_pair(
    root: Path,
    stem: str,
    quirk: str = "jpeg",
    side: tuple[int, int] = (64, 64),
    image: bool = True,
    mask: bool = True,
) -> None:
    lay = layout.Layout(root)
    lay.images_dir.mkdir(parents=True, exist_ok=True)
    lay.trimaps_dir.mkdir(parents=True, exist_ok=True)
    if image:
        write_quirky_image(lay.image_path(stem), picture(stem, *side), quirk)
    if mask:
        Image.fromarray(trimap(stem, *side)).save(lay.trimap_path(stem))


def make_dataset(root: Path, cats: int, dogs: int, complete: bool = True) -> list[str]:
    """``cats`` + ``dogs`` good pairs, every quirk and size among them; returns their stems."""
    stems = [f"{breed}_{i}" for i in range(1, cats + 1) for breed in ("Abyssinian",)]
    stems += [f"{breed}_{i}" for i in range(1, dogs + 1) for breed in ("beagle",)]
    for n, stem in enumerate(stems):
        write_pair(root, stem, QUIRKS[n % len(QUIRKS)], SIDES[n % len(SIDES)])
    assert len({identity(s) for s in stems}) == len(stems), (
        "identities must be distinct to catch a mix-up"
    )
    if complete:
        layout.Layout(root).marker.write_text("")
    return stems


def add_bad_files(root: Path) -> dict[str, list[str]]:
    """The real set's bad files; returns what the report must name, by reason."""
    lay = layout.Layout(root)
    write_pair(root, "beagle_116")
    data = lay.image_path("beagle_116").read_bytes()
    lay.image_path("beagle_116").write_bytes(data[: len(data) // 2])  # truncated JPEG
    write_pair(root, "chihuahua_121")
    lay.image_path("chihuahua_121").write_bytes(
        b"\xff\xd8\xff\xe0" + bytes(64)
    )  # JPEG header, then junk
    write_pair(root, "Bengal_9")
    bad = trimap("Bengal_9", 64, 64)
    bad[0, 0] = 0
    Image.fromarray(bad).save(lay.trimap_path("Bengal_9"))
    write_pair(root, "pug_9")
    Image.fromarray(trimap("pug_9", 32, 32)).save(lay.trimap_path("pug_9"))
    write_pair(root, "Persian_1", mask=False)
    write_pair(root, "Persian_2", image=False)
    (lay.images_dir / "._Abyssinian_1.jpg").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (lay.trimaps_dir / "._Abyssinian_1.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (lay.images_dir / "Abyssinian_100.mat").write_bytes(b"MATLAB 5.0 MAT-file")
    (lay.images_dir / ".DS_Store").write_bytes(b"\x00")
    (lay.images_dir / "README.txt").write_text("not an image")
    return {
        "undecodable_image": ["images/beagle_116.jpg", "images/chihuahua_121.jpg"],
        "bad_trimap": ["annotations/trimaps/Bengal_9.png"],
        "size_mismatch": ["images/pug_9.jpg"],
        "image_without_trimap": ["images/Persian_1.jpg"],
        "trimap_without_image": ["annotations/trimaps/Persian_2.png"],
        "appledouble": ["annotations/trimaps/._Abyssinian_1.png", "images/._Abyssinian_1.jpg"],
        "mat_file": ["images/Abyssinian_100.mat"],
        "hidden_file": ["images/.DS_Store"],
        "other_file": ["images/README.txt"],
    }


SMALL = (
    "data.source=oxford_pets",
    "data.segmentation.image_size=32",
    "data.segmentation.val_count=6",
    "data.classification.image_size=16",
    "data.classification.train_count=8",
    "data.classification.val_count=4",
    "data.classification.test_count=6",
    "data.preprocess.workers=1",
)


@pytest.fixture
def cfg(make_config):
    return make_config(*SMALL)


def npy_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def assert_rows_match_stems(npy: Path) -> None:
    """Every row's image and mask carry the identity of the stem index.json gives for that row."""
    for task in npy_dataset.SPLITS:
        for split in npy_dataset.SPLITS[task]:
            data = npy_dataset.load_split(npy, task, split)
            for i, stem in enumerate(data.stems):
                assert read_image_id(data.images[i]) == identity(stem), (task, split, i, stem)
                assert read_mask_id(data.masks[i]) == identity(stem), (task, split, i, stem)
                if data.labels is not None:
                    assert data.labels[i] == layout.species_of(stem)


# --------------------------------------------------------------------------- end to end


def test_quirks_are_converted_or_skipped_and_every_row_keeps_its_own_mask(cfg):
    raw = cfg.paths.resolve("raw")
    good = make_dataset(raw, cats=14, dogs=14)
    expected_skips = add_bad_files(raw)

    report = preprocess.run_preprocess(cfg)
    npy = cfg.paths.resolve("npy")
    assert_rows_match_stems(npy)

    seg = {s: npy_dataset.load_split(npy, "segmentation", s).stems for s in ("train", "val")}
    assert sorted(seg["train"] + seg["val"]) == sorted(good)
    assert len(seg["val"]) == 6
    assert report["pairs_found"] == len(good) + 4  # + beagle_116, chihuahua_121, Bengal_9, pug_9
    assert report["usable_pairs"] == len(good)
    assert report["segmentation"] == {"train": 22, "val": 6}
    cls = report["classification"]
    assert (cls["train"], cls["val"], cls["test"], cls["shrink"]) == (8, 4, 6, 1.0)
    assert (cls["usable_cats"], cls["usable_dogs"]) == (14, 14)

    # Every reason counted, every file named (the detail after ": " says why).
    for reason, files in expected_skips.items():
        assert report["skipped"][reason] == len(files), reason
        assert [entry.split(": ")[0] for entry in report["files"]["skipped"][reason]] == files, (
            reason
        )
    assert "truncated" in report["files"]["skipped"]["undecodable_image"][0].lower()
    assert "values 0" in report["files"]["skipped"]["bad_trimap"][0]
    assert set(report["skipped"]) == set(expected_skips)  # reasons that did not occur are left out

    kinds = report["converted"]
    assert sum(kinds.values()) == len(good)
    assert kinds["jpeg"] == 7  # plain JPEGs and the "extraneous bytes" ones
    assert {k: kinds[k] for k in kinds if k != "jpeg"} == {
        "png_as_jpg": 4,
        "gif_as_jpg+palette": 4,
        "png_as_jpg+rgba": 4,
        "jpeg+cmyk": 3,
        "jpeg+grayscale": 3,
        "png_as_jpg+palette": 3,
    }
    assert report["files"]["converted"]["gif_as_jpg+palette"][0].startswith("images/")
    assert "jpeg" not in report["files"]["converted"]

    on_disk = json.loads((cfg.paths.resolve("reports") / preprocess.REPORT_FILE).read_text())
    assert on_disk == report


def test_report_numbers_are_flat_scalars_for_dvc_metrics(cfg):
    """`dvc metrics show` shows scalars and leaves lists out: keep numbers out of lists and names in them."""
    make_dataset(cfg.paths.resolve("raw"), cats=10, dogs=10)
    report = preprocess.run_preprocess(cfg)

    def leaves(tree, prefix=""):
        for key, value in tree.items():
            if isinstance(value, dict):
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    for key, value in leaves({k: v for k, v in report.items() if k not in ("files", "notes")}):
        assert isinstance(value, (int, float, str)), key
    assert all(isinstance(v, list) for _, v in leaves(report["files"]))


def test_stray_files_are_counted_in_full_but_named_up_to_a_limit(cfg):
    raw = cfg.paths.resolve("raw")
    make_dataset(raw, cats=10, dogs=10)
    strays = checks.MAX_STRAYS_NAMED + 5
    for i in range(strays):
        (layout.Layout(raw).trimaps_dir / f"._beagle_{i}.png").write_bytes(b"\x00\x05\x16\x07")
    report = preprocess.run_preprocess(cfg)
    assert report["skipped"] == {"appledouble": strays}
    named = report["files"]["skipped"]["appledouble"]
    assert len(named) == checks.MAX_STRAYS_NAMED + 1 and named[-1] == "... and 5 more"


def test_worker_processes_write_the_same_bytes_as_one_process(cfg, make_config, tmp_path):
    make_dataset(cfg.paths.resolve("raw"), cats=10, dogs=10)
    add_bad_files(cfg.paths.resolve("raw"))
    preprocess.run_preprocess(cfg)
    single = npy_files(cfg.paths.resolve("npy"))

    pooled = make_config(*SMALL, "data.preprocess.workers=2", f"paths.npy={tmp_path / 'npy2'}")
    report = preprocess.run_preprocess(pooled)
    assert npy_files(tmp_path / "npy2") == single
    assert report["usable_pairs"] == 20


def test_incomplete_download_is_refused(cfg):
    make_dataset(cfg.paths.resolve("raw"), cats=10, dogs=10, complete=False)
    with pytest.raises(DataError, match=r"incomplete dataset \(no \.complete marker\)"):
        preprocess.run_preprocess(cfg)
    assert not cfg.paths.resolve("npy").exists()


def test_missing_dataset_folder_is_refused(cfg):
    with pytest.raises(DataError, match="no dataset folder"):
        preprocess.run_preprocess(cfg)


# --------------------------------------------------------------------------- split sizes


def test_impossible_sizes_fail_before_any_image_is_decoded(make_config, monkeypatch):
    cfg = make_config(*SMALL, "data.segmentation.val_count=40")
    make_dataset(cfg.paths.resolve("raw"), cats=10, dogs=10)

    def must_not_decode(path):
        raise AssertionError(f"decoded {path} before checking the split sizes")

    monkeypatch.setattr(images, "load_rgb", must_not_decode)
    with pytest.raises(
        ConfigError,
        match=r"data.segmentation.val_count=40: must be smaller than the dataset "
        r"\(20 image/trimap pairs",
    ):
        preprocess.run_preprocess(cfg)
    cfg = make_config(*SMALL, "data.classification.train_count=30")
    with pytest.raises(ConfigError, match=r"data.classification.train_count=30 \+ val_count=4"):
        preprocess.run_preprocess(cfg)


def test_sizes_are_checked_again_against_the_usable_pairs(make_config):
    cfg = make_config(
        *SMALL,
        "data.classification.train_count=2",
        "data.classification.val_count=2",
        "data.classification.test_count=2",
    )
    raw = cfg.paths.resolve("raw")
    make_dataset(raw, cats=3, dogs=4)
    for stem in ("Abyssinian_1", "beagle_1"):
        layout.Layout(raw).image_path(stem).write_bytes(b"junk")
    with pytest.raises(
        ConfigError,
        match=r"data.segmentation.val_count=6: must be smaller than the dataset "
        r"\(5 usable pairs .*2 unusable",
    ):
        preprocess.run_preprocess(cfg)
    assert not cfg.paths.resolve("npy").exists()


# --------------------------------------------------------------------------- the splits themselves


def book_two_list_split(image_files: list[str], trimap_files: list[str], seed: int, val: int):
    """The book's own code: two sorted lists, each shuffled by its own Random(seed)."""
    input_img_paths = sorted(image_files)
    target_paths = sorted(trimap_files)
    random.Random(seed).shuffle(input_img_paths)
    random.Random(seed).shuffle(target_paths)
    pairs = list(zip(input_img_paths, target_paths, strict=True))
    return pairs[:-val], pairs[-val:]


def real_like_stems() -> list[str]:
    breeds = [
        "Abyssinian",
        "Bengal",
        "Birman",
        "Bombay",
        "beagle",
        "boxer",
        "chihuahua",
        "pug",
        "yorkshire_terrier",
    ]
    return [f"{b}_{i}" for b in breeds for i in range(1, 201)]


def test_segmentation_split_reproduces_the_books_two_list_shuffle():
    stems = real_like_stems()
    random.Random(0).shuffle(stems)  # the listing order must not matter
    train, val = book_two_list_split(
        [f"images/{s}.jpg" for s in stems],
        [f"annotations/trimaps/{s}.png" for s in stems],
        1337,
        100,
    )
    split = splits.segmentation_split(stems, frozenset(stems), 100, 1337)
    assert split["train"] == [Path(img).stem for img, _ in train]
    assert split["val"] == [Path(img).stem for img, _ in val]
    # The book's pairs really are paired by stem (the premise of shuffling the pairs once).
    assert all(Path(img).stem == Path(tri).stem for img, tri in train + val)


def test_segmentation_split_drops_unusable_pairs_without_reshuffling():
    stems = real_like_stems()
    full = splits.segmentation_split(stems, frozenset(stems), 100, 1337)
    order = full["train"] + full["val"]
    bad = {order[5], order[-3]}  # one in train, one in validation
    split = splits.segmentation_split(stems, frozenset(stems) - bad, 100, 1337)
    assert split["train"] + split["val"] == [s for s in order if s not in bad]
    assert len(split["val"]) == 100
    assert split["val"][0] == full["train"][-1]  # the boundary moved by one, nothing else did


COUNTS = {"train": 20, "val": 10, "test": 20}


def test_classification_split_is_balanced_disjoint_and_deterministic():
    stems = real_like_stems()
    usable = frozenset(stems)
    split = splits.classification_split(stems, usable, COUNTS, 7)
    assert not split.shrunk
    seen: set[str] = set()
    for name, n in COUNTS.items():
        chosen = split.splits[name]
        assert len(chosen) == n
        assert sum(layout.species_of(s) == layout.CAT for s in chosen) == n // 2
        assert not seen & set(chosen)
        seen |= set(chosen)
    # cats and dogs mixed, not in two blocks
    train_species = [layout.species_of(s) for s in split.splits["train"]]
    assert train_species != sorted(train_species) and train_species != sorted(
        train_species, reverse=True
    )
    again = splits.classification_split(list(reversed(stems)), usable, COUNTS, 7)
    assert again.splits == split.splits
    assert splits.classification_split(stems, usable, COUNTS, 8).splits != split.splits


def test_classification_split_odd_sizes_differ_by_one_dog():
    stems = real_like_stems()
    split = splits.classification_split(
        stems, frozenset(stems), {"train": 7, "val": 3, "test": 5}, 1
    )
    for name, n in {"train": 7, "val": 3, "test": 5}.items():
        assert sum(layout.species_of(s) == layout.CAT for s in split.splits[name]) == n // 2
        assert len(split.splits[name]) == n


def test_classification_split_drops_unusable_without_reshuffling():
    stems = real_like_stems()
    full = splits.classification_split(stems, frozenset(stems), COUNTS, 7)
    bad = full.splits["val"][0]
    split = splits.classification_split(stems, frozenset(stems) - {bad}, COUNTS, 7)
    assert bad not in sum(split.splits.values(), [])
    assert set(split.splits["train"]) == set(full.splits["train"])  # earlier picks unaffected


def test_classification_split_shrinks_proportionally_when_a_species_is_short():
    cats = [f"Bengal_{i}" for i in range(1, 7)]  # 6 cats: the book's proportions need 9
    dogs = [f"pug_{i}" for i in range(1, 41)]
    split = splits.classification_split(
        cats + dogs, frozenset(cats + dogs), {"train": 8, "val": 4, "test": 6}, 3
    )
    assert split.shrunk and split.shrink == pytest.approx(12 / 18)
    assert {n: len(s) for n, s in split.splits.items()} == {"train": 4, "val": 2, "test": 4}
    for chosen in split.splits.values():
        assert sum(layout.species_of(s) == layout.CAT for s in chosen) * 2 == len(chosen)


def test_classification_split_too_few_for_balance_names_the_keys():
    stems = ["Bengal_1"] + [f"pug_{i}" for i in range(1, 30)]
    with pytest.raises(
        ConfigError,
        match=r"data.classification.train_count=2, data.classification.val_count=2, "
        r"data.classification.test_count=2: .* 1 usable cat",
    ):
        splits.classification_split(stems, frozenset(stems), {"train": 2, "val": 2, "test": 2}, 0)


def test_shrinking_is_reported_and_logged(cfg, caplog):
    raw = cfg.paths.resolve("raw")
    make_dataset(raw, cats=6, dogs=20)
    with caplog.at_level("WARNING"):
        report = preprocess.run_preprocess(cfg)
    cls = report["classification"]
    assert (cls["train"], cls["val"], cls["test"]) == (4, 2, 4) and cls["shrink"] < 1
    assert "shrunk" in report["notes"][0] and "6 usable cats" in report["notes"][0]
    assert "shrunk" in caplog.text
    counts = npy_dataset.read_index(cfg.paths.resolve("npy"), "classification")["counts"]
    assert counts == {"train": 4, "val": 2, "test": 4}
    assert_rows_match_stems(cfg.paths.resolve("npy"))


# --------------------------------------------------------------------------- the files on disk


def test_truncated_npy_is_rejected_naming_the_file(cfg):
    make_dataset(cfg.paths.resolve("raw"), cats=10, dogs=10)
    preprocess.run_preprocess(cfg)
    npy = cfg.paths.resolve("npy")
    path = npy_dataset.array_path(npy, "segmentation", "train", "masks")
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(DataError, match=r"segmentation/train_masks.npy: not a readable .npy file"):
        npy_dataset.load_split(npy, "segmentation", "train")


def test_index_records_how_the_arrays_were_made(cfg):
    make_dataset(cfg.paths.resolve("raw"), cats=10, dogs=10)
    preprocess.run_preprocess(cfg)
    npy = cfg.paths.resolve("npy")
    seg = npy_dataset.read_index(npy, "segmentation")
    cls = npy_dataset.read_index(npy, "classification")
    assert (seg["image_size"], seg["interpolation"], seg["shuffle_seed"]) == (32, "nearest", 1337)
    assert (cls["image_size"], cls["interpolation"], cls["labels"]) == (
        16,
        "bilinear",
        {"cat": 0, "dog": 1},
    )


def peak_bytes(cfg) -> int:
    tracemalloc.start()
    try:
        preprocess.run_preprocess(cfg)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_number_of_images(make_config, tmp_path):
    """In-process (workers=1, so tracemalloc sees the decoding too): five times the images, with
    96 px rows that would add ~1.5 MB if they were held, must not raise the peak by 1/4 of that."""
    sizes = (
        "data.segmentation.image_size=96",
        "data.classification.image_size=64",
        "data.segmentation.val_count=2",
        "data.classification.train_count=2",
        "data.classification.val_count=2",
        "data.classification.test_count=2",
    )
    small = make_config(
        *SMALL, *sizes, f"paths.raw={tmp_path / 'raw_small'}", f"paths.npy={tmp_path / 'npy_s'}"
    )
    large = make_config(
        *SMALL, *sizes, f"paths.raw={tmp_path / 'raw_large'}", f"paths.npy={tmp_path / 'npy_l'}"
    )
    make_dataset(small.paths.resolve("raw"), cats=4, dogs=4)
    make_dataset(large.paths.resolve("raw"), cats=20, dogs=20)
    # Warm-up, each once: first-use imports and caches, and interpreter tables (the interned
    # strings of the new paths) that grow once and would otherwise land in one measurement.
    peak_bytes(small), peak_bytes(large)
    grown = peak_bytes(large) - peak_bytes(small)
    held_if_kept = 32 * (96 * 96 * 4)
    assert grown < held_if_kept / 4, (grown, held_if_kept)


# --------------------------------------------------------------------------- atomicity


def fail_on_call(monkeypatch, n: int) -> None:
    """Make the n-th mask resize raise, as a crash half-way through converting would."""
    real, calls = images.resize_mask, {"n": 0}

    def flaky(array, size):
        calls["n"] += 1
        if calls["n"] == n:
            raise RuntimeError("injected failure")
        return real(array, size)

    monkeypatch.setattr(images, "resize_mask", flaky)


def test_failure_mid_run_leaves_no_npy_folder_and_no_partial_files(cfg, monkeypatch):
    make_dataset(cfg.paths.resolve("raw"), cats=10, dogs=10)
    fail_on_call(monkeypatch, 9)
    with pytest.raises(RuntimeError, match="injected"):
        preprocess.run_preprocess(cfg)
    npy = cfg.paths.resolve("npy")
    assert not npy.exists()
    assert [p.name for p in npy.parent.iterdir() if p.name.startswith(f".{npy.name}")] == []
    assert not (cfg.paths.resolve("reports") / preprocess.REPORT_FILE).exists()


def test_failure_mid_run_keeps_the_previous_output_whole(cfg, make_config, monkeypatch):
    make_dataset(cfg.paths.resolve("raw"), cats=10, dogs=10)
    preprocess.run_preprocess(cfg)
    npy, report = cfg.paths.resolve("npy"), cfg.paths.resolve("reports") / preprocess.REPORT_FILE
    before, report_before = npy_files(npy), report.read_bytes()

    fail_on_call(monkeypatch, 15)
    with pytest.raises(RuntimeError, match="injected"):
        preprocess.run_preprocess(make_config(*SMALL, "data.segmentation.image_size=40"))
    assert npy_files(npy) == before
    assert report.read_bytes() == report_before
    assert [p.name for p in npy.parent.iterdir() if p.name.startswith(f".{npy.name}")] == []


# --------------------------------------------------------------------------- the stage as users run it


@pytest.mark.slow
def test_stage_cli(tmp_path):
    from conftest import path_overrides, run_module

    overrides = [
        *path_overrides(tmp_path),
        *SMALL[:-1],
        "data.preprocess.workers=2",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    ]  # Hydra's log folder, not the repo's outputs/
    make_dataset(tmp_path / "raw", cats=10, dogs=10)
    done = run_module("petvision.preprocess", *overrides)
    assert done.returncode == 0, done.stderr
    assert "preprocess: convert" in done.stderr  # the progress bar
    assert_rows_match_stems(tmp_path / "npy")
    assert json.loads((tmp_path / "reports" / "preprocess.json").read_text())["usable_pairs"] == 20

    layout.Layout(tmp_path / "raw").marker.unlink()
    failed = run_module("petvision.preprocess", *overrides)
    assert failed.returncode == 2
    assert "error: " in failed.stderr and "incomplete dataset" in failed.stderr
    assert "Traceback" not in failed.stderr
