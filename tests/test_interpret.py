"""The interpretation library on tiny models and hand-made arrays: the book's recipes (chapter 9.4)
and the localization measures added to them."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading

import keras
import numpy as np
import pytest
from conftest import free_port
from keras import layers

from petvision.core.errors import ConfigError, DownloadError
from petvision.interpret.methods import activations, filters, gradcam, localization, segmentation
from petvision.models import imagenet, loading
from petvision.models.classification import mini_xception
from petvision.models.segmentation import book_model, unet_model
from petvision.render import images as pixels

# --------------------------------------------------------------------------- activations


def test_normalize_channel_is_the_books_formula_and_leaves_dead_channels_blank():
    x = np.array([[0.0, 1.0], [2.0, 3.0]])
    expected = np.clip((x - 1.5) / x.std() * 64 + 128, 0, 255).astype(np.uint8)
    assert np.array_equal(pixels.normalize_channel(x), expected)
    assert not pixels.normalize_channel(np.zeros((3, 3))).any()
    spike = np.zeros((10, 10))
    spike[0, 0] = 100.0
    assert pixels.normalize_channel(spike)[0, 0] == 255  # clipped, not wrapped around
    assert (pixels.normalize_channel(np.full((2, 2), 7.0)) == 128).all()


def test_activation_grid_puts_channel_c_at_row_c_div_16_and_keeps_a_partial_last_row():
    rng = np.random.default_rng(0)
    act = rng.normal(size=(5, 4, 20)).astype(np.float32)
    grid = pixels.activation_grid(act, images_per_row=16)
    assert grid.shape == (2 * 6 - 1, 16 * 5 - 1)  # 1-pixel gaps between cells
    for c in (0, 15, 16, 19):
        r, col = divmod(c, 16)
        cell = grid[r * 6 : r * 6 + 5, col * 5 : col * 5 + 4]
        assert np.array_equal(cell, pixels.normalize_channel(act[..., c]))
    assert not grid[6:, 4 * 5 :].any()  # past the last channel: blank
    assert not grid[5, :].any() and not grid[:, 4].any()  # the gaps


def test_activation_grid_draws_every_channel_at_the_cell_size():
    act = np.random.default_rng(1).normal(size=(4, 4, 3)).astype(np.float32)
    grid = pixels.activation_grid(act, images_per_row=16, cell=8)
    assert grid.shape == (8, 3 * 9 - 1)
    # Enlarged pixel for pixel: each source pixel becomes a 2x2 block.
    first = pixels.normalize_channel(act[..., 0])
    assert np.array_equal(grid[:8, :8], np.kron(first, np.ones((2, 2), np.uint8)))


def test_classifier_layers_are_its_convolutions_and_poolings_in_order():
    model = mini_xception(64, None, 0.5)
    names = activations.classifier_layers(model)
    assert names[0] == "stem_conv"
    assert names[1:5] == ["block1_sepconv1", "block1_sepconv2", "block1_pool", "block1_residual"]
    assert len(names) == 1 + 5 * 4 and "global_pool" not in names


def test_encoder_layers_stop_at_the_first_transposed_convolution():
    assert activations.encoder_layers(book_model(32, 3)) == [
        "down1_conv_stride2",
        "down1_conv",
        "down2_conv_stride2",
        "down2_conv",
        "down3_conv_stride2",
        "down3_conv",
    ]
    unet = activations.encoder_layers(unet_model(32, 3))
    assert unet[0] == "down1a_conv" and unet[-1] == "bottom_b_conv" and "down3_pool" in unet
    assert not any(name.startswith("up") for name in unet)


def test_layer_activations_have_each_layers_shape():
    model = book_model(32, 3)
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    maps = activations.layer_activations(model, ["down1_conv", "down3_conv"], image)
    assert maps["down1_conv"].shape == (16, 16, 64) and maps["down3_conv"].shape == (4, 4, 256)


# --------------------------------------------------------------------------- filters


def rescaling_convnet(size: int = 16) -> keras.Model:
    """Like the project's models: uint8-range input, rescaled inside."""
    inputs = keras.Input((size, size, 3), name="image")
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.Conv2D(6, 3, activation="relu", name="conv1")(x)
    x = layers.Conv2D(4, 3, name="conv2")(x)
    return keras.Model(inputs, x)


def test_gradient_ascent_raises_each_filters_mean_activation():
    keras.utils.set_random_seed(0)
    extractor = filters.feature_extractor(rescaling_convnet(), "conv2")
    chosen = [0, 1, 2, 3]
    start = filters.filter_patterns(extractor, chosen, steps=0, input_scale=255.0, seed=3)
    climbed = filters.filter_patterns(
        extractor, chosen, steps=10, learning_rate=10.0, input_scale=255.0, seed=3
    )
    # Starts as the book's noise in [0.4, 0.6], in the model's 0..255 input units.
    assert start.min() >= 0.4 * 255 and start.max() <= 0.6 * 255
    before = keras.ops.convert_to_numpy(filters.filter_activation(extractor, start, chosen))
    after = keras.ops.convert_to_numpy(filters.filter_activation(extractor, climbed, chosen))
    assert (after > before + 0.1).all(), (before, after)


def test_gradient_ascent_in_batches_equals_one_filter_at_a_time():
    keras.utils.set_random_seed(0)
    extractor = filters.feature_extractor(rescaling_convnet(), "conv2")
    together = filters.filter_patterns(
        extractor, [0, 1, 2], steps=3, input_scale=255.0, seed=5, batch_size=3
    )
    rng = np.random.default_rng(5)
    # Same noise as the batch draws, climbed image by image.
    starts = rng.uniform(0.4, 0.6, size=(3, 16, 16, 3)).astype(np.float32) * 255
    for i in range(3):
        image = starts[i : i + 1]
        for _ in range(3):
            grad = keras.ops.convert_to_numpy(_grad_of_filter(extractor, image, i))
            image = image + 10.0 * 255 * grad / np.sqrt(np.sum(grad**2))
        np.testing.assert_allclose(together[i], image[0], rtol=1e-4, atol=1e-2)


def _grad_of_filter(extractor, image, index):
    from petvision.interpret.methods.gradients import value_and_grad

    _, grad = value_and_grad(
        lambda x: keras.ops.sum(filters.filter_activation(extractor, x, [index]))
    )(image)
    return grad


def test_deprocess_crops_and_spreads_to_the_uint8_range():
    image = np.random.default_rng(0).normal(size=(60, 60, 3))
    out = pixels.deprocess(image, crop=25)
    assert out.shape == (10, 10, 3) and out.dtype == np.uint8
    assert pixels.deprocess(image, crop=0).shape == (60, 60, 3)


def test_stitch_places_tiles_row_by_row_with_margins():
    tiles = [np.full((3, 3, 3), 10 * (i + 1), np.uint8) for i in range(5)]
    grid = pixels.stitch(tiles, margin=1)  # 3 columns, 2 rows
    assert grid.shape == (2 * 3 + 1, 3 * 3 + 2, 3)
    assert (grid[4:7, 4:7] == 50).all()  # tile 4: row 1, column 1
    assert not grid[3].any() and not grid[4:, 8:].any()  # margin row; no sixth tile


def test_choose_layers_takes_the_configured_ones_and_names_a_missing_one():
    model = mini_xception(64, None, 0.5)
    assert filters.choose_layers({"mini_xception": ["stem_conv"]}, "mini_xception", model) == [
        "stem_conv"
    ]
    with pytest.raises(
        ConfigError, match=r"visualize.filters.layers.mini_xception.*'conv9'.*block1_sepconv1"
    ):
        filters.choose_layers({"mini_xception": ["conv9"]}, "mini_xception", model)
    # No entry: the first, middle and last spatial convolution (not the 1x1 projections).
    assert filters.choose_layers({}, "mini_xception", model) == [
        "stem_conv",
        "block3_sepconv1",
        "block5_sepconv2",
    ]


# --------------------------------------------------------------------------- Grad-CAM


def region_model(
    size: int = 16, region=(slice(0, 8), slice(0, 8)), weight: float = 1.0
) -> keras.Model:
    """A classifier whose evidence lies in one known region: fixed-weight convolution features,
    multiplied by a 0/1 mask of the region (the Grad-CAM layer), averaged, then a sigmoid."""
    mask = np.zeros((1, size, size, 1), np.float32)
    mask[(0, *region)] = 1.0
    inputs = keras.Input((size, size, 3), name="image")
    x = layers.Rescaling(1 / 255)(inputs)
    conv = layers.Conv2D(2, 3, padding="same", activation="relu", name="features")
    x = conv(x)
    x = layers.Lambda(lambda t: t * mask, name="masked")(x)
    x = layers.GlobalAveragePooling2D()(x)
    dense = layers.Dense(1, activation="sigmoid", name="dog_probability")
    out = dense(x)
    model = keras.Model(inputs, out)
    conv.set_weights([np.full((3, 3, 3, 2), 0.1, np.float32), np.zeros(2, np.float32)])
    dense.set_weights([np.full((2, 1), weight, np.float32), np.zeros(1, np.float32)])
    return model


def test_gradcam_heatmap_lands_on_the_region_the_evidence_comes_from():
    images = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    cam = gradcam.split_model(region_model(), "masked", "dog_probability")
    result = gradcam.heatmaps(cam, images)
    assert (result.predicted == 1).all() and (result.classes == 1).all()
    heat = result.heatmaps
    assert heat.shape == (3, 16, 16) and np.isclose(heat.max(axis=(1, 2)), 1.0).all()
    inside = heat[:, :8, :8].sum(axis=(1, 2))
    assert np.allclose(inside / heat.sum(axis=(1, 2)), 1.0)
    # The localization measures agree: all heat and the peak on the "pet".
    masks = np.ones((3, 16, 16, 1), np.uint8)
    masks[:, :8, :8] = 0
    metrics = localization.measures(heat, masks)
    assert metrics["heat_on_pet"] == pytest.approx(1.0) and metrics["pointing_game"] == 1.0
    assert metrics["pet_area"] == pytest.approx(0.25)


def test_gradcam_of_the_other_class_is_the_negative_evidence():
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    cam = gradcam.split_model(region_model(), "masked", "dog_probability")
    other = gradcam.heatmaps(cam, images, classes="other")
    assert (other.classes == 0).all()
    assert not other.heatmaps.any()  # every feature pushes towards dog: no evidence for cat


def test_gradcam_uses_the_logit_so_a_saturated_sigmoid_still_explains():
    images = np.full((1, 16, 16, 3), 200, np.uint8)
    cam = gradcam.split_model(region_model(weight=500.0), "masked", "dog_probability")
    result = gradcam.heatmaps(cam, images)
    assert result.probabilities[0] == 1.0  # float32 P(dog) saturated: d p / d z = 0
    assert result.heatmaps[0].max() == pytest.approx(1.0) and result.heatmaps[0][8:, 8:].max() == 0


def test_the_gradcam_map_follows_the_books_steps():
    fmap = np.zeros((1, 2, 2, 2), np.float32)
    fmap[0, :, :, 0] = [[1, 2], [3, 4]]
    fmap[0, :, :, 1] = [[4, 0], [0, 0]]
    grads = np.zeros_like(fmap)
    grads[..., 0] = 1.0  # channel weights: mean gradient 1 and -1
    grads[..., 1] = -1.0
    heat = gradcam.class_map("gradcam", fmap, grads)[0]
    raw = np.maximum(((fmap[0, ..., 0] - fmap[0, ..., 1]) / 2), 0)
    np.testing.assert_allclose(heat, raw / raw.max())
    assert not gradcam.class_map("gradcam", np.zeros_like(fmap), grads).any()  # blank, not NaN


def test_heat_on_pet_and_pointing_game_on_hand_made_maps():
    mask = np.array([[0, 0, 1, 1], [2, 0, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]], np.uint8)
    region = localization.pet_region(mask)
    assert region.sum() == 4  # pet and border count, background does not
    heat = np.zeros((4, 4), np.float32)
    heat[0, 0], heat[1, 0], heat[3, 3] = 1.0, 0.5, 0.5
    assert localization.heat_on_pet(heat, region) == pytest.approx(0.75)
    assert localization.pointing_hit(heat, region) == 1.0
    heat[3, 3] = 2.0
    assert localization.pointing_hit(heat, region) == 0.0
    assert np.isnan(localization.heat_on_pet(np.zeros((4, 4)), region))


def test_localization_averages_over_images_and_leaves_out_blank_maps():
    masks = np.ones((3, 4, 4, 1), np.uint8)
    masks[:, :2, :2] = 0  # pets cover a quarter of each image
    heat = np.zeros((3, 4, 4), np.float32)
    heat[0, 0, 0] = 1.0  # all on the pet, peak on it
    heat[1, 0, 0], heat[1, 3, 3] = 0.5, 1.0  # a third on the pet, peak off it
    metrics = localization.measures(heat, masks)  # image 2: blank
    assert metrics["images"] == 3 and metrics["blank_heatmaps"] == 1
    assert metrics["heat_on_pet"] == pytest.approx((1 + 1 / 3) / 2)
    assert metrics["pointing_game"] == pytest.approx(0.5)
    assert metrics["pet_area"] == pytest.approx(0.25)


def test_upsample_keeps_a_heatmap_where_it_was():
    heat = np.zeros((2, 2), np.float32)
    heat[0, 1] = 1.0
    up = localization.upsample(heat, (8, 8))
    assert up.shape == (8, 8) and np.unravel_index(up.argmax(), up.shape)[1] >= 4
    assert up[:4, 4:].sum() > up.sum() / 2


def test_jet_overlay_is_an_image_of_the_same_size():
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    out = pixels.jet_overlay(image, np.eye(4, dtype=np.float32), alpha=0.4)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8 and out.max() == 255


# --------------------------------------------------------------------------- segmentation


def test_worst_cases_are_the_lowest_ious_first_ties_in_order():
    ious = np.array([0.9, 0.2, 0.5, 0.2, 1.0])
    assert segmentation.worst_cases(ious, 3).tolist() == [1, 3, 2]
    assert segmentation.worst_cases(ious, 10).tolist() == [1, 3, 2, 0, 4]


def test_pet_ious_per_image():
    true = np.ones((2, 4, 4, 1), np.uint8)
    true[0, :2, :2] = 0
    pred = np.ones((2, 4, 4), np.uint8)
    pred[0, :2, :] = 0  # 4 of 8 predicted pet pixels right
    assert segmentation.pet_ious(true, pred).tolist() == [
        0.5,
        1.0,
    ]  # image 1: no pet anywhere


def test_predict_masks_takes_the_most_likely_class_per_pixel():
    inputs = keras.Input((8, 8, 3))
    probs = layers.Conv2D(3, 1, activation="softmax", name="classes")(inputs)
    model = keras.Model(inputs, probs)
    model.get_layer("classes").set_weights(
        [np.zeros((1, 1, 3, 3), np.float32), np.array([0, 0, 1], np.float32)]
    )
    masks = segmentation.predict_masks(model, np.zeros((3, 8, 8, 3), np.uint8), batch_size=2)
    assert masks.shape == (3, 8, 8) and (masks == 2).all()


def test_mask_overlay_tints_pet_and_border_only():
    image = np.full((2, 2, 3), 100, np.uint8)
    mask = np.array([[0, 1], [2, 1]], np.uint8)
    out = pixels.mask_overlay(image, mask, alpha=0.5)
    assert (out[0, 1] == 100).all() and (out[1, 1] == 100).all()
    assert out[0, 0].tolist() == [177, 120, 50] and out[1, 0].tolist() == [177, 177, 50]


# --------------------------------------------------------------------------- loading


def test_a_mixed_precision_model_is_explained_in_float32():
    try:
        keras.config.set_dtype_policy("mixed_bfloat16")
        model = rescaling_convnet()
    finally:
        keras.config.set_dtype_policy("float32")
    copy = loading.float32_copy(model)
    assert all(layer.dtype_policy.compute_dtype == "float32" for layer in copy.layers)
    # The same network with the same weights, built in float32: what the copy must compute. Not
    # the mixed model run itself: a CPU without bfloat16 kernels (AVX2) cannot run its convolutions.
    twin = rescaling_convnet()
    twin.set_weights(model.get_weights())
    x = np.random.default_rng(0).uniform(0, 255, (1, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(copy(x)), keras.ops.convert_to_numpy(twin(x)), rtol=1e-5
    )
    assert loading.float32_copy(copy) is copy


class _Server:
    """A real HTTP server on 127.0.0.1 serving one body at any path."""

    def __init__(self, body: bytes):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/file"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_fetch_verified_downloads_into_the_cache_and_checks_the_md5(tmp_path):
    body = b"weights" * 1000
    with _Server(body) as server:
        path = imagenet.fetch_verified(
            server.url, "w.h5", hashlib.md5(body).hexdigest(), 5.0, cache_dir=tmp_path
        )
        assert path.read_bytes() == body
        with pytest.raises(DownloadError, match="md5"):
            imagenet.fetch_verified(server.url, "other.h5", "0" * 32, 5.0, cache_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.h5"]  # nothing half-written left
    # Cached and verified: no network needed any more.
    assert (
        imagenet.fetch_verified(
            "http://127.0.0.1:9/gone",
            "w.h5",
            hashlib.md5(body).hexdigest(),
            5.0,
            cache_dir=tmp_path,
        )
        == path
    )


@pytest.mark.timeout(30)
def test_imagenet_xception_offline_fails_at_once_saying_why(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/xception.h5"
    with pytest.raises(DownloadError) as info:
        imagenet.load_xception(url, url, timeout_s=5.0, cache_dir=tmp_path)
    message = str(info.value)
    assert "visualize.model=imagenet_xception" in message and "internet" in message
    assert url in message and str(tmp_path) in message and "visualize.model=trained" in message


@pytest.mark.timeout(30)
def test_imagenet_xception_download_from_a_silent_host_is_bounded(tmp_path):
    # A server that accepts the connection and never answers: the read timeout must end the wait.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/xception.h5"
        with pytest.raises(DownloadError, match="imagenet_xception"):
            imagenet.load_xception(url, url, timeout_s=0.5, cache_dir=tmp_path)


def test_imagenet_conv_base_carries_the_full_models_weights_at_another_size():
    xception = keras.applications.Xception(weights=None)
    base = imagenet.xception_conv_base(xception, 96)
    assert base.inputs[0].shape[1:] == (96, 96, 3)
    for name in ("block1_conv1", "block3_sepconv1", "block14_sepconv2"):
        for mine, theirs in zip(
            base.get_layer(name).get_weights(), xception.get_layer(name).get_weights()
        ):
            assert np.array_equal(mine, theirs)


def test_imagenet_inputs_are_299_pixels_in_minus_one_to_one():
    images = np.stack([np.zeros((40, 40, 3), np.uint8), np.full((40, 40, 3), 255, np.uint8)])
    x = imagenet.xception_inputs(images)
    assert x.shape == (2, 299, 299, 3)
    assert np.allclose(x[0], -1.0) and np.allclose(x[1], 1.0)


@pytest.mark.parametrize("architecture", ["mini_xception", "simple_convnet", "residual_convnet"])
def test_every_classifier_architecture_can_be_explained_with_the_default_settings(architecture):
    from petvision import config
    from petvision.config import ClassificationModelConfig, architectures
    from petvision.models.classification import build_classifier

    cfg = config.load(config.compose([f"classification/model={architecture}"]))
    model_cfg = cfg.classification.model
    model = build_classifier(
        ClassificationModelConfig(
            name=architecture, augmentation=model_cfg.augmentation, dropout=model_cfg.dropout
        ),
        96,
    )
    chosen = filters.choose_layers(cfg.visualize.filters.layers, architecture, model)
    assert len(chosen) == 3
    images = np.random.default_rng(0).integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
    result = gradcam.heatmaps(
        gradcam.split_model(model, architectures.last_conv_layer(architecture), "dog_probability"),
        images,
    )
    assert (
        result.heatmaps.ndim == 3
        and len(result.heatmaps) == 2
        and np.isfinite(result.heatmaps).all()
    )
    assert activations.classifier_layers(model)
