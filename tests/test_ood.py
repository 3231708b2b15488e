"""petvision.evaluation.ood: the k-th nearest-neighbour distance and the threshold worked out by
hand, the detector's round trip through the trust file, and a detector fitted on a real
convnet's features that flags a photo far from its training images and not a held-out image of
the same kind."""

from __future__ import annotations

import math

import numpy as np
import pytest

from petvision.evaluation import ood


def test_kth_distance_worked_by_hand():
    # Unit vectors in the plane: the bank at 0, 90 and 180 degrees.
    bank = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # A query at 45 degrees (given unscaled: it is made unit length first) is sqrt(2 - sqrt(2))
    # from the first two bank vectors and sqrt(2 + sqrt(2)) from the third.
    q = np.array([[3.0, 3.0]])
    near, far = math.sqrt(2 - math.sqrt(2)), math.sqrt(2 + math.sqrt(2))
    assert ood.kth_distance(q, bank, 1)[0] == pytest.approx(near, abs=1e-6)
    assert ood.kth_distance(q, bank, 2)[0] == pytest.approx(near, abs=1e-6)
    assert ood.kth_distance(q, bank, 3)[0] == pytest.approx(far, abs=1e-6)
    with pytest.raises(ValueError, match="k=4"):
        ood.kth_distance(q, bank, 4)


def test_the_threshold_is_the_validation_quantile_worked_by_hand():
    scores = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    # NumPy's linear rule: position 0.9 * (5 - 1) = 3.6 -> 4 + 0.6 * (5 - 4)
    assert ood.threshold_at_quantile(scores, 0.9) == pytest.approx(4.6)
    assert ood.threshold_at_quantile(scores, 0.5) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="quantile=1"):
        ood.threshold_at_quantile(scores, 1.0)


def test_pooling_is_each_channels_mean_and_standard_deviation():
    maps = np.zeros((1, 2, 2, 2), np.float32)
    maps[0, :, :, 0] = [[1, 3], [1, 3]]  # mean 2, std 1
    maps[0, :, :, 1] = 5  # mean 5, std 0
    np.testing.assert_allclose(ood.pool_mean_std(maps), [[2, 5, 1, 0]])


def test_fit_scales_each_layer_by_its_validation_median_and_thresholds_the_sum():
    rng = np.random.default_rng(0)
    train = [rng.normal(size=(200, 8)) + 5, rng.normal(size=(200, 4)) + 5]
    val = [rng.normal(size=(50, 8)) + 5, rng.normal(size=(50, 4)) + 5]
    detector, val_scores = ood.fit(["a", "b"], train, val, k=3, quantile=0.9)
    per_layer = detector.layer_scores(val)
    np.testing.assert_allclose(np.median(per_layer, axis=0), [1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(per_layer.sum(1), val_scores, rtol=1e-6)
    assert detector.threshold == pytest.approx(np.quantile(val_scores, 0.9))
    assert detector.flag(val_scores).mean() == pytest.approx(0.1, abs=0.021)


def test_the_detector_round_trips_through_the_trust_file(tmp_path):
    from petvision.core.errors import DataError
    from petvision.evaluation import trust

    rng = np.random.default_rng(1)
    train = [rng.normal(size=(30, 6))]
    detector, _ = ood.fit(["x"], train, [rng.normal(size=(10, 6))], k=2, quantile=0.8)
    saved = trust.Trust({"source": "synthetic"}, 1.5, detector, "classification")
    loaded = trust.Trust.load(saved.save(tmp_path / "t.npz"))
    assert (loaded.task, loaded.temperature, loaded.provenance) == (
        "classification",
        1.5,
        {"source": "synthetic"},
    )
    d = loaded.detector
    assert d is not None
    assert (d.layers, d.k, d.threshold, d.quantile) == (["x"], 2, detector.threshold, 0.8)
    queries = [rng.normal(size=(5, 6))]
    np.testing.assert_allclose(d.score(queries), detector.score(queries), rtol=1e-6)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="bad.npz: not a trust file"):
        trust.Trust.load(tmp_path / "bad.npz")


def test_detection_report_auroc_and_rates():
    report = ood.detection_report(
        np.array([0.1, 0.2, 0.3, 0.9]), {"far": np.array([0.8, 1.0])}, threshold=0.5
    )
    assert report["false_alarm_rate"] == 0.25  # 0.9 of the four held-out images
    # pairs (held-out, far) ranked right: 0.8 beats 0.1, 0.2, 0.3 (3 of 4); 1.0 beats all 4
    assert report["far"] == {"images": 2, "auroc": pytest.approx(7 / 8), "flagged": 1.0}


def _tiles(image: np.ndarray) -> list[bytes]:
    return sorted(image[r : r + 2, c : c + 2].tobytes() for r in (0, 2) for c in (0, 2))


def test_shuffled_patches_keep_every_tile():
    images = np.arange(2 * 4 * 4 * 1, dtype=np.uint8).reshape(2, 4, 4, 1)
    out = ood.shuffled_patches(images, grid=2, seed=3)
    assert out.shape == images.shape and not np.array_equal(out, images)
    for i in range(2):
        assert _tiles(out[i]) == _tiles(images[i])


def test_a_photo_far_from_the_training_images_is_flagged_and_a_held_out_one_is_not(make_config):
    """A real convnet (the book's segmentation model, seeded, untrained: the detector reads
    whatever features it has) and generated pets: trained on some, thresholded on others, it
    flags a photo unlike all of them (scikit-image's astronaut) and passes a new pet."""
    import keras

    from petvision.config import SyntheticConfig
    from petvision.data import images as image_io
    from petvision.data.synthetic import plan
    from petvision.data.synthetic.picture import render
    from petvision.evaluation import features
    from petvision.models.segmentation import book_model

    skimage_data = pytest.importorskip("skimage.data")

    size = 32
    keras.utils.set_random_seed(0)
    model = book_model(size, 3)
    synthetic = SyntheticConfig(**{**dict(make_config(raw=True).data.synthetic), "num_images": 70})
    pets = np.stack(
        [
            image_io.resize_image(render(synthetic, i, breed, stem).image, size, "bilinear")
            for i, breed, stem in plan(synthetic)
        ]
    )
    layers = ["down2_conv", "down3_conv"]
    train, val, held_out = pets[:40], pets[40:60], pets[60:]
    fit_with = features.forward(model, train, layers).features
    detector, _ = ood.fit(
        layers, fit_with, features.forward(model, val, layers).features, k=3, quantile=0.95
    )
    astronaut = image_io.resize_image(skimage_data.astronaut(), size, "bilinear")[None]
    far = detector.score(features.forward(model, astronaut, layers).features)
    near = detector.score(features.forward(model, held_out, layers).features)
    assert detector.flag(far).all(), (far, detector.threshold)
    assert detector.flag(near).mean() <= 0.2, (near, detector.threshold)


@pytest.mark.parametrize("head", ["softmax", "sigmoid"])
def test_without_detector_layers_the_pass_gives_every_images_logits(head):
    """`trust.detector=false` asks for no layer: the pass must still give each image's logits
    (a probe of one output is one array, which was once read as a list of outputs)."""
    import keras

    from petvision.evaluation import features
    from petvision.models.classification import mini_xception
    from petvision.models.segmentation import book_model

    keras.utils.set_random_seed(0)
    model = book_model(16, 3) if head == "softmax" else mini_xception(32)
    layers = ["down2_conv"] if head == "softmax" else ["block2_add"]
    size = model.inputs[0].shape[1]
    images = np.random.default_rng(0).integers(0, 256, (5, size, size, 3), dtype=np.uint8)
    alone = features.forward(model, images, [], batch_size=4)
    tapped = features.forward(model, images, layers, batch_size=4)
    assert alone.features == [] and len(alone.logits) == 5
    np.testing.assert_allclose(alone.logits, tapped.logits, rtol=1e-5, atol=1e-6)
