"""python -m petvision.predict: photos of any format and size in, probability, trimap PNG, overlays
and one table out; the photo resized exactly as preprocess resized the training images."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import QUIRKS, run_module, write_quirky_image
from PIL import Image
from project_copy import tiny_overrides
from saved_models import SIZE, generated_pets, write_trust_files

from petvision.config import task_config
from petvision.core.tasks import Task


@pytest.fixture
def trained_dir(untrained_models):
    """The configuration, with untrained models saved where the pipeline saves its own."""
    cfg, _ = untrained_models
    return cfg


def _photos(folder, rng):
    """One photo per quirk of the real dataset, each its own size (one exactly the model's), a
    corrupt JPEG, a text file and an AppleDouble twin."""
    folder.mkdir()
    sizes = {}
    for i, quirk in enumerate(QUIRKS):
        h, w = (SIZE, SIZE) if i == 0 else (40 + 7 * i, 90 - 5 * i)
        write_quirky_image(
            folder / f"photo_{quirk}.jpg", rng.integers(0, 256, (h, w, 3), dtype=np.uint8), quirk
        )
        sizes[f"photo_{quirk}"] = (h, w)
    good = (folder / "photo_jpeg.jpg").read_bytes()
    (folder / "broken.jpg").write_bytes(good[: len(good) // 3])
    (folder / "notes.txt").write_text("not a photo")
    (folder / "._photo_jpeg.jpg").write_bytes(b"\x00\x05\x16\x07")
    return sizes


def _with(cfg, **predict):
    import dataclasses

    return dataclasses.replace(cfg, predict=dataclasses.replace(cfg.predict, **predict))


def test_every_format_gets_probability_trimap_and_overlays_at_its_size(trained_dir, tmp_path):
    import keras

    from petvision.data import images
    from petvision.inference import run_predict

    rng = np.random.default_rng(0)
    sizes = _photos(tmp_path / "photos", rng)
    out = tmp_path / "predictions"
    table = run_predict(
        _with(trained_dir, input=str(tmp_path / "photos"), output=str(out), gradcam=True)
    )

    assert table["counts"] == {"files": 10, "predicted": 8, "skipped": 2, "ignored_hidden": 1}
    skipped = {
        r["file"].rsplit("/", 1)[-1]: r["error"]
        for r in table["photos"]
        if r["status"] == "skipped"
    }
    assert set(skipped) == {"broken.jpg", "notes.txt"} and "broken.jpg" in skipped["broken.jpg"]

    classifier = keras.saving.load_model(task_config(trained_dir, Task.classification).model_file)
    segmenter = keras.saving.load_model(task_config(trained_dir, Task.segmentation).model_file)
    with open(out / "predictions.csv", newline="") as f:
        rows = {r["file"].rsplit("/", 1)[-1]: r for r in csv.DictReader(f)}
    assert json.loads((out / "predictions.json").read_text())["photos"] == table["photos"]
    for stem, (h, w) in sizes.items():
        row = rows[f"{stem}.jpg"]
        assert row["status"] == "ok", row
        # The probability is the classifier's on the photo resized as preprocess resizes.
        rgb, _ = images.load_rgb(tmp_path / "photos" / f"{stem}.jpg")
        x = images.resize_image(rgb, SIZE, trained_dir.data.classification.interpolation)[
            None
        ].astype("float32")
        p_dog = float(classifier.predict(x, verbose=0)[0, 0])
        assert float(row["p_dog"]) == pytest.approx(p_dog, abs=1e-5)
        assert row["label"] == ("dog" if p_dog >= 0.5 else "cat")
        assert float(row["probability"]) == pytest.approx(max(p_dog, 1 - p_dog), abs=1e-5)
        mask = np.asarray(Image.open(out / row["mask"]))
        assert mask.shape == (h, w) and set(np.unique(mask)) <= {1, 2, 3}
        assert Image.open(out / row["overlay"]).size == (w, h)
        assert Image.open(out / row["gradcam"]).size == (w, h)
        if (h, w) == (SIZE, SIZE):  # at the model's own size the trimap is its argmax, plus one
            y = images.resize_image(rgb, SIZE, trained_dir.data.segmentation.interpolation)[
                None
            ].astype("float32")
            expected = np.argmax(segmenter.predict(y, verbose=0)[0], axis=-1) + 1
            np.testing.assert_array_equal(mask, expected)
    assert rows["photo_cmyk.jpg"]["decoded_as"] == "jpeg+cmyk"
    assert rows["photo_gif_as_jpg.jpg"]["decoded_as"] == "gif_as_jpg+palette"


def test_a_dataset_photo_reaches_the_model_exactly_as_preprocess_wrote_it(make_config, tmp_path):
    from petvision.data import layout, npy_dataset
    from petvision.download import run_download
    from petvision.inference import LoadedModel, read_photo
    from petvision.preprocess import run_preprocess

    cfg = make_config(*tiny_overrides(), "data.classification.interpolation=bicubic")
    run_download(cfg)
    run_preprocess(cfg)
    for task in ("classification", "segmentation"):
        split = npy_dataset.load_split(cfg.paths.resolve("npy"), task, "val")
        data = getattr(cfg.data, task)
        model = LoadedModel(task, None, "test", data.image_size, data.interpolation)
        for i in range(3):
            photo, _ = read_photo(
                layout.Layout(cfg.paths.resolve("raw")).image_path(split.stems[i])
            )
            np.testing.assert_array_equal(model.prepare(photo), split.images[i])


def test_names_stay_distinct_when_stems_collide(tmp_path):
    from petvision.inference import output_names

    files = [
        tmp_path / "a" / "x.jpg",
        tmp_path / "a" / "x.png",
        tmp_path / "b" / "x.jpg",
        tmp_path / "y.gif",
    ]
    assert output_names(files) == ["x_jpg", "x_png", "x_jpg_2", "y"]


def test_bad_inputs_are_named_and_leave_no_output(trained_dir, tmp_path):
    from petvision.core.errors import ConfigError, DataError
    from petvision.inference import run_predict

    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="nowhere.jpg does not exist"):
        run_predict(_with(trained_dir, input=[str(tmp_path / "nowhere.jpg")], output=str(out)))
    with pytest.raises(ConfigError, match="predict.input"):
        run_predict(_with(trained_dir, input="", output=str(out)))
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match="junk.jpg"):
        run_predict(_with(trained_dir, input=str(tmp_path / "junk.jpg"), output=str(out)))
    assert not out.exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    write_quirky_image(tmp_path / "ok.jpg", np.zeros((20, 20, 3), np.uint8), "jpeg")
    with pytest.raises(ConfigError, match="predict did not write"):
        run_predict(_with(trained_dir, input=str(tmp_path / "ok.jpg"), output=str(mine)))
    assert (mine / "thesis.tex").read_text() == "precious"
    with pytest.raises(DataError, match="classifier.keras: missing"):
        run_predict(
            _with(
                trained_dir,
                input=str(tmp_path / "ok.jpg"),
                output=str(out),
                classifier=str(tmp_path / "classifier.keras"),
            )
        )


@pytest.mark.slow
def test_the_command_line_predicts_a_folder_with_a_progress_bar(trained_dir, tmp_path):
    from conftest import path_overrides

    rng = np.random.default_rng(1)
    _photos(tmp_path / "photos", rng)
    done = run_module(
        "petvision.predict",
        *path_overrides(tmp_path),
        *tiny_overrides(),
        f"predict.input={tmp_path / 'photos'}",
        "predict.output=out",
        cwd=tmp_path,
        hydra_dir=tmp_path / "hydra",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "predict: 100%" in done.stderr and "skipped: " in done.stdout + done.stderr
    assert "broken.jpg" in done.stdout + done.stderr
    assert "predicted 8 photo(s), skipped 2 unreadable file(s)" in done.stdout
    with open(tmp_path / "out" / "predictions.csv", newline="") as f:
        assert sum(1 for r in csv.DictReader(f) if r["status"] == "ok") == 8


# --------------------------------------------------------------------------- trust


def test_predict_says_what_the_models_were_trained_on_and_flags_photos_unlike_it(
    trained_dir, tmp_path, caplog
):
    from petvision.evaluation import trust
    from petvision.inference import run_predict

    skimage_data = pytest.importorskip("skimage.data")
    pets = generated_pets(trained_dir, 148)
    write_trust_files(trained_dir, pets)
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(skimage_data.astronaut()).save(folder / "astronaut.png")
    for i, pet in enumerate(pets[140:148]):  # drawn like the training pets, fitted nothing
        Image.fromarray(pet).save(folder / f"pet_{i}.png")
    out = tmp_path / "predictions"
    with caplog.at_level("WARNING", logger="petvision.inference"):
        table = run_predict(_with(trained_dir, input=str(folder), output=str(out)))

    assert [r.getMessage() for r in caplog.records].count(trust.GENERATED_WARNING) == 1
    with open(out / "predictions.csv", newline="") as f:
        rows = {r["file"].rsplit("/", 1)[-1]: r for r in csv.DictReader(f)}
    assert rows["astronaut.png"]["unlike_training_data"] == "True"
    # each detector flags about 5 % of such pets (its threshold): of 8, at most one
    flagged_pets = [i for i in range(8) if rows[f"pet_{i}.png"]["unlike_training_data"] == "True"]
    assert len(flagged_pets) <= 1, flagged_pets
    for row in rows.values():
        assert row["trained_on"].startswith("GENERATED PETS, not photos: synthetic data")
        assert float(row["ood_score"]) > 0 and float(row["seg_ood_score"]) > 0
    threshold = table["models"]["classification"]["detector"]["threshold"]
    seg_threshold = table["models"]["segmentation"]["detector"]["threshold"]
    astronaut = rows["astronaut.png"]
    assert float(astronaut["ood_score"]) > threshold or float(astronaut["seg_ood_score"]) > (
        seg_threshold
    )
    assert table["models"]["classification"]["trained_on"]["source"] == "synthetic"
    # the overlay of the flagged photo is framed in red, the others are not
    flagged = np.asarray(Image.open(out / astronaut["overlay"]))
    plain_pet = next(i for i in range(8) if i not in flagged_pets)
    plain = np.asarray(Image.open(out / rows[f"pet_{plain_pet}.png"]["overlay"]))
    assert flagged[0, 0, 0] > 180 and flagged[0, 0, 1] < 60
    assert not (plain[0, 0, 0] > 180 and plain[0, 0, 1] < 60)


def test_calibrated_probabilities_follow_the_temperature(trained_dir, tmp_path):
    """P(dog) in the table is sigmoid(logit / T) with the trust file's T."""
    import keras

    from petvision.data import images
    from petvision.evaluation import trust
    from petvision.inference import run_predict

    pets = generated_pets(trained_dir, 148)
    write_trust_files(trained_dir, pets)
    path = task_config(trained_dir, Task.classification).model_file
    saved = trust.Trust.load(trust.trust_file(path))
    saved.temperature = 2.5
    saved.save(trust.trust_file(path))
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(pets[141]).save(folder / "pet.png")
    table = run_predict(_with(trained_dir, input=str(folder), output=str(tmp_path / "out")))
    model = keras.saving.load_model(path)
    x = images.resize_image(pets[141], SIZE, trained_dir.data.classification.interpolation)
    p = float(model.predict(x[None].astype("float32"), verbose=0)[0, 0])
    logit = np.log(p) - np.log1p(-p)
    expected = 1 / (1 + np.exp(-logit / 2.5))
    assert table["photos"][0]["p_dog"] == pytest.approx(expected, abs=1e-4)
