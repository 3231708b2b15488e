"""Backend neutrality: where TensorFlow is absent but Keras 3 and JAX are (the lent GPU machine),
the model builders, the input batches and the resumable ``loop.fit`` still work.

The JAX check runs in a subprocess with ``KERAS_BACKEND=jax`` and ``import tensorflow`` made to
fail, so anything on that path that needs TensorFlow shows. The test extras install JAX (CPU), so
CI runs it; it is skipped only where JAX is missing. The batches that such a backend gets are
checked here on any backend.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import ROOT

from petvision.data import inputs

needs_jax = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None, reason="JAX is not installed"
)


def epoch(ds) -> list[tuple[np.ndarray, np.ndarray]]:
    return [ds[i] for i in range(len(ds))]


def test_array_batches_give_every_row_once_per_epoch_paired_and_reshuffled():
    """The batches backends without tf.data get (runs on any backend)."""
    images = np.arange(10, dtype=np.uint8).reshape(10, 1)
    targets = images * 2
    ds = inputs.ArrayBatches(images, targets, 4, shuffle=True, seed=3)
    first = epoch(ds)
    assert [len(x) for x, _ in first] == [4, 4, 2]
    rows = np.concatenate([x for x, _ in first]).ravel()
    assert sorted(rows) == list(range(10))
    assert all((y == x * 2).all() for x, y in first)  # images and targets stay paired
    assert all((np.diff(x.ravel()) > 0).all() for x, _ in first)  # sorted reads from the memory map
    assert [
        x.tolist() for x, _ in epoch(inputs.ArrayBatches(images, targets, 4, shuffle=True, seed=3))
    ] == [x.tolist() for x, _ in first]  # the seed decides the order
    ds.on_epoch_end()
    second = np.concatenate([x for x, _ in epoch(ds)]).ravel()
    assert sorted(second) == list(range(10)) and second.tolist() != rows.tolist()
    in_order = inputs.ArrayBatches(images, targets, 4, shuffle=False, seed=3, drop_remainder=True)
    assert [x.ravel().tolist() for x, _ in epoch(in_order)] == [[0, 1, 2, 3], [4, 5, 6, 7]]


ON_JAX = textwrap.dedent("""
    import json, sys

    class NoTensorFlow:  # any import of TensorFlow on this path fails loudly
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "tensorflow":
                raise ImportError(f"{name}: TensorFlow is blocked in this check")

    sys.meta_path.insert(0, NoTensorFlow())
    from pathlib import Path
    import keras, numpy as np
    from petvision.evaluation import metrics
    from petvision.data import inputs
    from petvision.training import loop, runtime, workdir
    from petvision.config import (AugmentationConfig, ClassificationModelConfig, SegmentationModelConfig,
                                  TrainConfig, TrainerConfig)
    from petvision.models.classification import build_classifier
    from petvision.models import xla
    from petvision.models.segmentation import build_segmentation_model

    assert keras.backend.backend() == "jax", keras.backend.backend()
    work = Path(sys.argv[1])
    rt = runtime.setup(TrainerConfig(device="cpu", precision=sys.argv[2], xla=False, strategy="default",
                                     seed=1, deterministic=False, resume=False))
    rng = np.random.default_rng(0)
    augmentation = AugmentationConfig(enabled=True, flip="horizontal", rotation=0.1, zoom=0.2)
    def classifier(name, augment, dropout, size):
        model_cfg = ClassificationModelConfig(name=name, augmentation=augment, dropout=dropout)
        return build_classifier(model_cfg, size)

    def segmenter(name):
        return build_segmentation_model(SegmentationModelConfig(name=name, num_classes=3), 16)

    cases = [
        ("segmentation", segmenter("book"), 16),
        ("segmentation", segmenter("unet"), 16),
        ("classification", classifier("mini_xception", augmentation, 0.5, 32), 32),
        ("classification", classifier("simple_convnet", augmentation, 0.5, 80), 80),
        ("classification", classifier("residual_convnet", None, 0.0, 32), 32),
    ]
    report = {"xla": rt.xla, "precision": rt.precision, "models": {}}
    for task, model, size in cases:
        x = rng.integers(0, 256, (18, size, size, 3), dtype=np.uint8)
        y = rng.integers(0, 3, (18, size, size, 1), dtype=np.uint8) if task == "segmentation" \\
            else rng.integers(0, 2, (18,), dtype=np.uint8)
        train_ds = inputs.batches(x[:16], y[:16], 4, shuffle=True, seed=1)
        val_ds = inputs.batches(x[16:], y[16:], 4, shuffle=False, seed=1)
        segmentation = task == "segmentation"
        train_cfg = TrainConfig(optimizer="adam", learning_rate=1e-3, batch_size=4, epochs=1,
                                early_stopping_patience=0)
        loop.compile_model(
            model, rt, train_cfg, len(train_ds),
            loss="sparse_categorical_crossentropy" if segmentation else "binary_crossentropy",
            metrics=(
                metrics.segmentation_metrics(3) if segmentation
                else metrics.classification_metrics()
            ),
            config_key=task,
        )
        # A compiled step runs the Python of train_step only while JAX traces it (once for the
        # one batch shape here); op by op it runs at every one of the 4 steps.
        traced = []
        step = model.train_step
        model.train_step = lambda *a, step=step: traced.append(1) or step(*a)
        seeds = [v for v in model.non_trainable_variables if "seed_generator" in v.path]
        before = [np.asarray(v.value).copy() for v in seeds]
        result = loop.fit(model, train_ds, val_ds, loop.Fitting(
            train_cfg, workdir.Workdir(work / model.name), config_key=task, verbose=0))
        with xla.loading():
            best = xla.allow(keras.saving.load_model(result.best_model, safe_mode=True))
        report["models"][model.name] = {
            # A loaded model predicts compiled too (Keras decides before xla.allow can run).
            "loaded_jit_compile": bool(best.jit_compile),
            "input_kind": type(train_ds).__name__,
            "jit_compile": bool(model.jit_compile),
            "train_step_python_runs": len(traced),
            "steps": len(train_ds),
            # Each seed generator's counter: how many times the compiled steps drew from it.
            "seed_draws": [int(np.asarray(v.value)[1] - b[1]) for v, b in zip(seeds, before)],
            "history": sorted(result.history),
            "prediction_shape": list(np.asarray(best.predict(x[:2], verbose=0)).shape),
        }

    # The book's augmentation, compiled as the training step compiles it: the seed state goes in
    # and comes out advanced, so two steps draw two transformations; inference passes images through.
    import jax
    from petvision.models.classification import data_augmentation

    augment = xla.allow(data_augmentation(augmentation))
    augment.build((None, 32, 32, 3))
    image = np.asarray(rng.integers(0, 256, (2, 32, 32, 3)), np.float32)
    @jax.jit
    def augmented(state, images):
        return augment.stateless_call([], state, images, training=True)
    state = [v.value for v in augment.non_trainable_variables]
    first, state = augmented(state, image)
    second, state = augmented(state, image)
    inference = augment(image, training=False)
    report["augmentation"] = {
        "blockers": xla.blockers(augment),
        "steps_differ": bool(np.abs(np.asarray(first) - np.asarray(second)).max() > 1.0),
        "changes_images": bool(np.abs(np.asarray(first) - image).max() > 1.0),
        "inference_is_identity": bool(np.array_equal(np.asarray(inference), image)),
    }
    from petvision.interpret.methods import gradients

    square = lambda v: keras.ops.sum(v * v)
    value, grad = gradients.value_and_grad(square)(np.array([1.0, 2.0], np.float32))
    _, compiled = gradients.value_and_grad(square, compiled=True)(np.array([3.0], np.float32))
    report["gradient"] = [value, grad.tolist(), compiled.tolist()]
    print(json.dumps(report))
""")


def run_on_jax(tmp_path, precision: str) -> dict:
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", ON_JAX, str(tmp_path), precision],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@needs_jax
@pytest.mark.slow
@pytest.mark.timeout(1000)
@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_every_model_trains_compiled_on_jax_without_tensorflow(tmp_path, precision):
    report = run_on_jax(tmp_path, precision)
    assert report["xla"] is True  # JAX runs a step compiled only through XLA (runtime.setup)
    assert report["precision"] == precision
    models = report["models"]
    assert set(models) == {
        "book_segmentation",
        "unet_segmentation",
        "mini_xception",
        "simple_convnet",
        "residual_convnet",
    }
    for name, seen in models.items():
        assert seen["input_kind"] == "ArrayBatches", name
        assert "loss" in seen["history"] and "val_loss" in seen["history"], name
    assert models["book_segmentation"]["prediction_shape"] == [2, 16, 16, 3]
    assert models["unet_segmentation"]["prediction_shape"] == [2, 16, 16, 3]
    assert models["mini_xception"]["prediction_shape"] == [2, 1]
    for name, seen in models.items():
        # Compiled: train_step's Python ran once, while JAX traced it, not once per step (Keras
        # runs a model holding RandomRotation/RandomZoom op by op unless models.xla allows them).
        assert seen["jit_compile"] and seen["loaded_jit_compile"], name
        assert seen["steps"] == 4 and seen["train_step_python_runs"] == 1, (name, seen)
    # The augmentation inside the compiled steps drew a new transformation at each of the 4 steps
    # (flip, rotation, zoom and the dropout: one seed generator each).
    for name in ("mini_xception", "simple_convnet"):
        assert models[name]["seed_draws"] == [4, 4, 4, 4], (name, models[name]["seed_draws"])
    assert report["augmentation"] == {
        "blockers": [],
        "steps_differ": True,
        "changes_images": True,
        "inference_is_identity": True,
    }
    # interpret/methods/gradients.py's JAX branch: d/dx sum(x^2) = 2x, traced op by op and compiled.
    assert report["gradient"] == [5.0, [2.0, 4.0], [6.0]]


def test_a_batch_is_padded_to_full_size_or_a_short_input_to_a_power_of_two():
    from petvision.evaluation.batched import padded_size

    assert [padded_size(n, 64) for n in (1, 2, 3, 5, 8, 33, 63, 64, 65, 2400)] == [
        1,
        2,
        4,
        8,
        8,
        64,
        64,
        64,
        64,
        64,
    ]
    assert padded_size(50, 48) == 48  # never more than a batch


def _two_output_model():
    import keras

    inputs = keras.Input((6, 6, 3))
    conv = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(conv)
    return keras.Model(inputs, [conv, keras.layers.Dense(1, name="head")(pooled)])


def test_on_tensorflow_batched_predict_is_the_model_called_batch_by_batch():
    """The trust step's numbers on TensorFlow stay those of the model called on each batch."""
    import keras

    from petvision.evaluation import batched

    if keras.backend.backend() != "tensorflow":
        pytest.skip("checks the TensorFlow path")
    model = _two_output_model()
    images = np.random.default_rng(0).integers(0, 256, (70, 6, 6, 3), dtype=np.uint8)
    conv, head = batched.predict(model, images, batch_size=32)
    by_hand = [model(images[s : s + 32].astype(np.float32), training=False) for s in (0, 32, 64)]
    assert np.array_equal(conv, np.concatenate([np.asarray(c) for c, _ in by_hand]))
    assert np.array_equal(head, np.concatenate([np.asarray(h) for _, h in by_hand]))
    with pytest.raises(ValueError, match="no images"):
        batched.predict(model, images[:0])


BATCHED_ON_JAX = textwrap.dedent("""
    import json, sys, warnings
    import keras, numpy as np
    from petvision.config import AugmentationConfig, ClassificationModelConfig
    from petvision.evaluation import batched, features
    from petvision.models import loading
    from petvision.models.classification import build_classifier

    assert keras.backend.backend() == "jax"
    warnings.simplefilter("always")
    report = {}

    def traced(model):
        # predict_step's Python runs once per compilation (JAX traces it for each new shape).
        seen = []
        step = model.predict_step
        model.predict_step = lambda *a: seen.append(1) or step(*a)
        return seen

    inputs = keras.Input((6, 6, 3))
    conv = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    model = keras.Model(inputs, [conv, keras.layers.Dense(1)(keras.layers.Flatten()(conv))])
    images = np.random.default_rng(0).integers(0, 256, (70, 6, 6, 3), dtype=np.uint8)
    seen = traced(model)
    conv_out, head = batched.predict(model, images, batch_size=32)  # 32, 32 and 6 padded to 32
    direct = model(images.astype(np.float32), training=False)
    report["simple"] = {
        "shapes": [list(conv_out.shape), list(head.shape)],
        "close": bool(np.allclose(conv_out, direct[0], atol=1e-5)
                      and np.allclose(head, direct[1], atol=1e-5)),
        "traces_70": len(seen),
    }
    batched.predict(model, images[:5], batch_size=32)  # padded to 8
    batched.predict(model, images[:7], batch_size=32)  # 8 again
    batched.predict(model, images[:40], batch_size=32)  # 32: compiled already
    report["simple"]["traces_after"] = len(seen)

    # The trust step's probe of the mini-Xception (augmentation included), as the training stages
    # make it: a float32 copy of a model trained under mixed_bfloat16.
    keras.config.set_dtype_policy("mixed_bfloat16")
    aug = AugmentationConfig(enabled=True, flip="horizontal", rotation=0.1, zoom=0.2)
    trained = build_classifier(ClassificationModelConfig(name="mini_xception", augmentation=aug,
                                                         dropout=0.5), 32)
    trained.compile(optimizer="adam", loss="binary_crossentropy", jit_compile=True)
    keras.config.set_dtype_policy("float32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        copy = loading.float32_copy(trained)
        pictures = np.random.default_rng(1).integers(0, 256, (70, 32, 32, 3), dtype=np.uint8)
        layers = ["block3_add", "block4_add"]
        first = features.forward(copy, pictures, layers)
        probe = features._PROBES[copy][tuple(layers)]
        seen = traced(probe)
        again = features.forward(copy, pictures[:33], layers)  # the same probe, the same shape
    report["probe"] = {
        "warnings": [str(w.message) for w in caught if "jit_compile" in str(w.message)],
        "jit_compile": bool(probe.jit_compile),
        "compiled_predict": probe.predict_function is not None,  # made by predict_on_batch
        "traces_again": len(seen),
        "features": [list(f.shape) for f in first.features],
        "same_rows": bool(np.allclose(again.logits, first.logits[:33], atol=1e-4)),
    }
    print(json.dumps(report))
""")


@needs_jax
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_on_jax_batched_predict_and_the_trust_probe_compile_once_per_shape(tmp_path):
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", BATCHED_ON_JAX],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=580,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    simple = report["simple"]
    assert simple["shapes"] == [[70, 4, 4, 4], [70, 1]] and simple["close"]
    # 70 images at 32: one shape (the last 6 padded to 32); then 5 and 7 share 8; 40 reuses 32.
    assert simple["traces_70"] == 1 and simple["traces_after"] == 2
    probe = report["probe"]
    # Compiled (Keras's fallback to op by op would warn), and the probe made once per model.
    assert probe["warnings"] == [] and probe["jit_compile"] and probe["compiled_predict"]
    assert probe["traces_again"] == 0
    assert probe["features"] == [[70, 256], [70, 512]]
    assert probe["same_rows"]


ON_JAX_MAPS = textwrap.dedent("""
    import json, sys

    class NoTensorFlow:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "tensorflow":
                raise ImportError(f"{name}: TensorFlow is blocked in this check")

    sys.meta_path.insert(0, NoTensorFlow())
    import keras, numpy as np

    # explain(), the test's own function, goes here

    assert keras.backend.backend() == "jax", keras.backend.backend()
    model = keras.saving.load_model(sys.argv[1])
    images = np.load(sys.argv[2])
    print(json.dumps(explain(model, images)))
""")


def explain(model, images) -> dict:
    """What the visualize stage computes with gradients and predictions, on any backend: the
    maps of a model cut at two blocks, in padded batches, before and after its weights change;
    the book's Grad-CAM of the runner-up class; and P(dog)."""
    from petvision.interpret.methods import faithfulness, gradcam

    cam = gradcam.split_model(model, ["block3_add", "block1_add"], "dog_probability")
    before = gradcam.cut_maps(cam, images, methods=["hirescam", "gradcam"], batch_size=2)
    dense = model.get_layer("dog_probability")
    kernel, bias = dense.get_weights()
    dense.set_weights([-kernel, -bias])
    after = gradcam.cut_maps(cam, images, methods=["hirescam"], batch_size=2)
    other = gradcam.heatmaps(gradcam.split_model(model, "block3_add"), images, classes="other")
    return {
        "classes": [before.classes.tolist(), after.classes.tolist(), other.classes.tolist()],
        "maps": [
            before.maps["block1_add"]["hirescam"].tolist(),
            before.maps["block3_add"]["gradcam"].tolist(),
            after.maps["block3_add"]["hirescam"].tolist(),
            other.heatmaps.tolist(),
        ],
        "p_dog": faithfulness.classifier_scores(model, batch_size=2)(images).tolist(),
    }


@needs_jax
@pytest.mark.slow
def test_the_maps_and_scores_are_the_same_on_jax_without_tensorflow(tmp_path):
    """interpret/methods/gradients.py's compiled pass over several layers, with the weights as
    arguments, gives on JAX what it gives on TensorFlow, here."""
    import keras

    from petvision.models.classification import mini_xception

    keras.utils.set_random_seed(0)
    mini_xception(image_size=32, augmentation=None, dropout=0.0).save(tmp_path / "model.keras")
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    script = ON_JAX_MAPS.replace(
        "# explain(), the test's own function, goes here", _source(explain)
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "model.keras"), str(tmp_path / "images.npy")],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    on_jax = json.loads(done.stdout.strip().splitlines()[-1])
    here = explain(keras.saving.load_model(tmp_path / "model.keras"), images)
    assert on_jax["classes"] == here["classes"]
    assert here["classes"][1] == [1 - c for c in here["classes"][0]]  # the weights were followed
    for mine, theirs in zip(here["maps"], on_jax["maps"], strict=True):
        np.testing.assert_allclose(np.asarray(theirs), np.asarray(mine), atol=1e-4)
    np.testing.assert_allclose(on_jax["p_dog"], here["p_dog"], atol=1e-6)


def _source(fn) -> str:
    import inspect

    return textwrap.dedent(inspect.getsource(fn))
