"""python -m petvision.export: both models as SavedModels whose uint8 serving signature answers
as the Keras model does (to 1e-5) on sample images, and at the temperature of the model's trust
file when it has one, as predict does."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from saved_models import SIZE

from petvision.config import task_config
from petvision.core.tasks import Task


def test_savedmodels_take_uint8_images_and_match_keras(untrained_models, tmp_path):
    import tensorflow as tf

    from petvision.core.errors import ConfigError
    from petvision.export import run_export

    cfg, saved = untrained_models
    models = {"classifier": saved[Task.classification], "segmentation": saved[Task.segmentation]}
    out = tmp_path / "exported"
    summary = run_export(
        dataclasses.replace(cfg, export=dataclasses.replace(cfg.export, output=str(out)))
    )
    assert summary["classification"]["input"] == f"uint8[None, {SIZE}, {SIZE}, 3]"

    images = np.random.default_rng(0).integers(0, 256, (6, SIZE, SIZE, 3), dtype=np.uint8)
    for folder, model in models.items():
        loaded = tf.saved_model.load(str(out / folder))
        signature = loaded.signatures["serving_default"]
        [spec] = signature.structured_input_signature[1].values()
        assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, SIZE, SIZE, 3]
        served = signature(images=tf.constant(images))
        [served] = served.values()
        expected = model.predict(images.astype("float32"), verbose=0)
        np.testing.assert_allclose(served.numpy(), expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            loaded.serve(tf.constant(images)).numpy(), expected, rtol=1e-5, atol=1e-5
        )

    # With trust files (temperature 2): the probabilities predict gives, whose logits are the
    # Keras model's divided by 2 (worked out here from its probabilities; the export computes
    # them from the logits instead). A softmax's logits are its log-probabilities up to a
    # constant per pixel, so they are compared centred.
    from petvision.evaluation import trust

    def logits(p, binary):
        p = np.asarray(p, np.float64)
        if binary:
            return np.log(p) - np.log1p(-p)
        return np.log(p) - np.log(p).mean(axis=-1, keepdims=True)

    prov = {"source": "synthetic", "preset": "tiny"}
    for task in Task:
        model_file = task_config(cfg, task).model_file
        trust.Trust(prov, 2.0, None, str(task)).save(trust.trust_file(model_file))
    hot = tmp_path / "exported-t2"
    summary = run_export(
        dataclasses.replace(cfg, export=dataclasses.replace(cfg.export, output=str(hot)))
    )
    assert summary["classification"]["temperature"] == 2.0
    assert summary["segmentation"]["trained_on"] == prov
    for folder, model in models.items():
        binary = folder == "classifier"
        loaded = tf.saved_model.load(str(hot / folder))  # held: it owns the variables
        served = logits(loaded.serve(tf.constant(images)).numpy(), binary)
        expected = logits(model.predict(images.astype("float32"), verbose=0), binary) / 2.0
        scale = np.abs(expected).max()
        assert scale > 1e-4, scale  # something for the temperature to change
        np.testing.assert_allclose(served, expected, rtol=0, atol=scale * 1e-2)

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="export did not write"):
        run_export(
            dataclasses.replace(cfg, export=dataclasses.replace(cfg.export, output=str(mine)))
        )
