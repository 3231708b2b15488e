"""The logged models take the photo: a column of base64 JPEG/PNG bytes in, the label and
probability or the mask out, equal to predict's; the resized-array input keeps working."""

from __future__ import annotations

import base64
import dataclasses
import io
import os

import numpy as np
import pytest
from conftest import ROOT, VENV_BIN, free_port, start_server, write_quirky_image
from PIL import Image
from project_copy import tiny_overrides
from saved_models import SIZE, generated_pets, write_trust_files

from petvision.config import task_config
from petvision.core.tasks import Task


@pytest.fixture
def logged(make_config, tmp_path):
    """Both models (untrained: serving does not depend on training) logged as the training
    stages log them; returns the configuration and their models:/ URIs."""
    from petvision import tracking
    from petvision.models.classification import build_classifier
    from petvision.models.segmentation import build_segmentation_model

    cfg = make_config(*tiny_overrides())
    uris = {}
    for task, model in (
        (Task.classification, build_classifier(cfg.classification.model, SIZE)),
        (Task.segmentation, build_segmentation_model(cfg.segmentation.model, SIZE)),
    ):
        with tracking.Run(cfg, "test", task=task_config(cfg, task)) as run:
            uris[task] = run.log_keras_model(model, np.zeros((1, SIZE, SIZE, 3), np.uint8))
        assert uris[task] and not run.lost, run.lost
    return cfg, uris


def _photos(folder):
    folder.mkdir()
    rng = np.random.default_rng(3)
    write_quirky_image(folder / "a.jpg", rng.integers(0, 256, (90, 120, 3), dtype=np.uint8), "jpeg")
    write_quirky_image(
        folder / "b.jpg", rng.integers(0, 256, (50, 70, 3), dtype=np.uint8), "rgba"
    )  # a PNG
    return [folder / "a.jpg", folder / "b.jpg"]


def _predict(cfg, uris, photos, out):
    from petvision.inference import run_predict

    p = dataclasses.replace(
        cfg.predict,
        input=[str(f) for f in photos],
        output=str(out),
        classifier=uris["classification"],
        segmenter=uris["segmentation"],
    )
    return {row["file"]: row for row in run_predict(dataclasses.replace(cfg, predict=p))["photos"]}


def _b64(path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def test_the_pyfunc_answers_encoded_photos_as_predict_does_and_still_takes_arrays(logged, tmp_path):
    import mlflow
    import pandas as pd

    from petvision import tracking
    from petvision.core.errors import DataError
    from petvision.data import images
    from petvision.inference.serving import decode_mask

    cfg, uris = logged
    photos = _photos(tmp_path / "photos")
    expected = _predict(cfg, uris, photos, tmp_path / "out")
    mlflow.set_tracking_uri(tracking.tracking_uri(cfg.tracking))
    try:
        classifier = mlflow.pyfunc.load_model(uris["classification"])
        segmenter = mlflow.pyfunc.load_model(uris["segmentation"])
    finally:
        mlflow.set_tracking_uri(None)
    frame = pd.DataFrame({"image": [_b64(f) for f in photos]})

    labels = classifier.predict(frame)
    masks = segmenter.predict(frame)
    for i, f in enumerate(photos):
        row = expected[str(f)]
        assert labels["label"][i] == row["label"]
        assert labels["p_dog"][i] == pytest.approx(row["p_dog"], abs=1e-6)
        mask = decode_mask(masks["mask_png"][i])
        np.testing.assert_array_equal(mask, np.asarray(Image.open(tmp_path / "out" / row["mask"])))
        assert (masks["width"][i], masks["height"][i]) == (row["width"], row["height"])

    # the resized-array input, as before
    rgb, _ = images.load_rgb(photos[0])
    x = images.resize_image(rgb, SIZE, cfg.data.classification.interpolation)[None]
    assert np.asarray(classifier.predict(x)).shape == (1, 1)
    assert float(np.asarray(classifier.predict(x))[0, 0]) == pytest.approx(
        expected[str(photos[0])]["p_dog"], abs=1e-6
    )
    assert np.asarray(segmenter.predict(np.zeros((2, SIZE, SIZE, 3), np.uint8))).shape == (
        2,
        SIZE,
        SIZE,
        3,
    )

    with pytest.raises(DataError, match="row 1: 'image' is not base64"):
        classifier.predict(pd.DataFrame({"image": [_b64(photos[0]), "%%%"]}))
    with pytest.raises(DataError, match="row 0: 'image': cannot decode"):
        classifier.predict(pd.DataFrame({"image": [base64.b64encode(b"GIF89a broken").decode()]}))
    # Good and bad photos together: refused whole, every bad row named (module docstring).
    with pytest.raises(DataError) as refused:
        segmenter.predict(pd.DataFrame({"image": ["%%%", _b64(photos[0]), NOT_A_PHOTO]}))
    assert str(refused.value).startswith("2 of 3 photo(s) cannot be read, so none was predicted")
    assert "row 0: 'image' is not base64" in str(refused.value)
    assert "row 2: 'image': cannot decode" in str(refused.value)
    assert "row 1" not in str(refused.value)


NOT_A_PHOTO = base64.b64encode(b"name,label\nrex,dog\n").decode()  # a CSV file sent as a photo


def refused(answer, *named: str) -> str:
    """A 400 whose JSON message names what is wrong, and nothing of the server's insides."""
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["error_code"] == "INVALID_PARAMETER_VALUE", body
    assert "predictions" not in body and "stack_trace" not in body, body
    for text in named:
        assert text in body["message"], body["message"]
    for inside in ("Traceback", 'File "', ".py", "site-packages", str(ROOT), "/tmp/"):
        assert inside not in answer.text, (inside, answer.text)
    return body["message"]


@pytest.mark.slow
def test_mlflow_models_serve_answers_photos_like_predict_and_refuses_bad_ones_with_a_400(
    logged, tmp_path
):
    import requests

    from petvision import tracking

    cfg, uris = logged
    photo = _photos(tmp_path / "photos")[0]
    expected = _predict(cfg, uris, [photo], tmp_path / "out")[str(photo)]

    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking.tracking_uri(cfg.tracking),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
    }
    url = f"http://127.0.0.1:{port}"
    _, stop = start_server(
        [
            str(VENV_BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            uris["classification"],
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        f"{url}/ping",
        tmp_path / "serve.log",
        wait_s=180,
        env=env,
    )
    try:
        body = {"dataframe_split": {"columns": ["image"], "data": [[_b64(photo)]]}}
        answer = requests.post(f"{url}/invocations", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        [row] = answer.json()["predictions"]
        assert row["label"] == expected["label"]
        assert row["probability"] == pytest.approx(expected["probability"], abs=1e-6)

        # the resized array still works over HTTP
        from petvision.data import images

        rgb, _ = images.load_rgb(photo)
        x = images.resize_image(rgb, SIZE, cfg.data.classification.interpolation)[None]
        answer = requests.post(f"{url}/invocations", json={"inputs": x.tolist()}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"][0][0] == pytest.approx(expected["p_dog"], abs=1e-6)

        # A file that is no photo; then good and bad photos together: refused whole (no partial
        # answer to mistake for a whole one), each bad row named; then arrays of the wrong size.
        def post(rows):
            body = {"dataframe_split": {"columns": ["image"], "data": [[row] for row in rows]}}
            return requests.post(f"{url}/invocations", json=body, timeout=60)

        refused(
            post([NOT_A_PHOTO]), "1 of 1 photo(s) cannot be read", "row 0: 'image': cannot decode"
        )
        message = refused(
            post([_b64(photo), "%%%", NOT_A_PHOTO]),
            "2 of 3 photo(s) cannot be read, so none was predicted",
            "row 1: 'image' is not base64",
            "row 2: 'image': cannot decode",
        )
        assert "row 0" not in message.split("Error:", 1)[-1]
        wrong_size = {"inputs": np.zeros((1, 5, 5, 3)).tolist()}
        refused(
            requests.post(f"{url}/invocations", json=wrong_size, timeout=60),
            f"expected images {SIZE}x{SIZE}x3",
            "got an array of shape (1, 5, 5, 3)",
        )
        answer = post([_b64(photo)])  # and the server goes on answering
        assert answer.status_code == 200, answer.text
    finally:
        stop()


def test_an_rgba_png_is_read_like_the_loader_reads_it(tmp_path):
    from petvision.data import images
    from petvision.inference.serving import _decode

    rgba = np.random.default_rng(0).integers(0, 256, (10, 12, 4), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buffer, format="PNG")
    (tmp_path / "x.png").write_bytes(buffer.getvalue())
    np.testing.assert_array_equal(
        _decode(base64.b64encode(buffer.getvalue()).decode(), 0),
        images.load_rgb(tmp_path / "x.png")[0],
    )


def test_the_served_models_flag_photos_and_say_what_they_were_trained_on_as_predict_does(
    untrained_models, tmp_path
):
    """Models logged with their trust file (as the training stages log them): the pyfunc
    answers ood_score, unlike_training_data and trained_on, equal to predict's from the same
    MLflow models, and its probabilities are predict's calibrated ones."""
    import mlflow
    import pandas as pd

    from petvision import tracking
    from petvision.evaluation import trust

    skimage_data = pytest.importorskip("skimage.data")
    cfg, builders = untrained_models
    pets = generated_pets(cfg, 148)
    write_trust_files(cfg, pets)
    uris = {}
    for task, model in builders.items():
        t = task_config(cfg, task)
        with tracking.Run(cfg, "test", task=t) as run:
            uris[task] = run.log_keras_model(
                model,
                np.zeros((1, SIZE, SIZE, 3), np.uint8),
                extra_files=[trust.trust_file(t.model_file)],
            )
        assert uris[task] and not run.lost, run.lost
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(skimage_data.astronaut()).save(folder / "astronaut.png")
    Image.fromarray(pets[141]).save(folder / "pet.png")
    photos = [folder / "astronaut.png", folder / "pet.png"]
    expected = _predict(cfg, uris, photos, tmp_path / "out")

    mlflow.set_tracking_uri(tracking.tracking_uri(cfg.tracking))
    try:
        served = {task: mlflow.pyfunc.load_model(uri) for task, uri in uris.items()}
    finally:
        mlflow.set_tracking_uri(None)
    frame = pd.DataFrame({"image": [_b64(f) for f in photos]})
    labels = served[Task.classification].predict(frame)
    masks = served[Task.segmentation].predict(frame)
    for i, f in enumerate(photos):
        row = expected[str(f)]
        assert labels["p_dog"][i] == pytest.approx(row["p_dog"], abs=1e-6)
        assert labels["ood_score"][i] == pytest.approx(row["ood_score"], abs=1e-5)
        assert masks["ood_score"][i] == pytest.approx(row["seg_ood_score"], abs=1e-5)
        assert (
            bool(labels["unlike_training_data"][i] or masks["unlike_training_data"][i])
            is (row["unlike_training_data"])
        )
        assert labels["trained_on"][i].startswith("GENERATED PETS, not photos: synthetic data")
    assert expected[str(photos[0])]["unlike_training_data"] is True
