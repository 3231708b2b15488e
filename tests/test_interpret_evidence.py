"""Where the classifier looks, measured: class activation map recipes, localization scores,
deletion/insertion, trimap occlusion, the randomization sanity check and the segmentation
breakdown. Expected values are worked out by hand in the comments; a model whose evidence is
planted in a known region checks the whole chain, trained and randomized."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

from petvision import config
from petvision.config import architectures
from petvision.core.errors import ConfigError
from petvision.core.tasks import Task
from petvision.interpret.methods import (
    faithfulness,
    gradcam,
    localization,
    sanity,
    segmentation,
)
from petvision.models.classification import mini_xception, residual_convnet, simple_convnet
from petvision.render import figures, report_tables
from petvision.render import images as pixels

# --------------------------------------------------------------------------- the layer registry

BLOCK_OUTPUTS = {
    name: architectures.lookup(Task.classification, name).block_outputs
    for name in ("mini_xception", "simple_convnet", "residual_convnet")
}


@pytest.mark.parametrize("builder", [mini_xception, simple_convnet, residual_convnet])
def test_block_outputs_go_shallow_to_deep_and_end_at_the_grad_cam_layer(builder):
    model = builder(image_size=96, augmentation=None, dropout=0.0)
    blocks = BLOCK_OUTPUTS[model.name]
    sizes = [model.get_layer(name).output.shape[1] for name in blocks]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > sizes[-1]
    assert blocks[-1] == architectures.last_conv_layer(model.name)


def test_the_default_layers_are_chosen_by_stride_whatever_the_input_size():
    # mini-Xception blocks 1..5 at 96 px: 46, 23, 12, 6, 3 cells -> strides 2, 4, 8, 16, 32; at
    # 180 px: 88, 44, 22, 11, 6 (180/11 = 16.4 and 180/6 = 30 round to 16 and 32); at 64 px: 30,
    # 15, 8, 4, 2.
    for size in (64, 96, 180):
        model = mini_xception(image_size=size, augmentation=None)
        blocks = BLOCK_OUTPUTS["mini_xception"]
        assert [localization.stride(model, b) for b in blocks] == [2, 4, 8, 16, 32]
        assert localization.layers_by_stride(model, blocks, 8, 16) == ["block3_add", "block4_add"]
    # No block in range: the nearest one (residual_convnet at 32 px has strides 2, 4, 4).
    small = residual_convnet(image_size=32)
    assert localization.layers_by_stride(small, BLOCK_OUTPUTS["residual_convnet"], 8, 16) == [
        "block2_add"
    ]


# --------------------------------------------------------------------------- recipes


def test_the_three_recipes_on_a_hand_made_feature_map():
    # Channel 0 fires at (0, 0), channel 1 (twice as strong) at (1, 1).
    fmap = np.zeros((1, 2, 2, 2))
    fmap[0, 0, 0, 0], fmap[0, 1, 1, 1] = 1.0, 2.0
    grads = np.zeros_like(fmap)
    grads[0, 0, 0, 0] = 2.0
    grads[0, 1, 0, 1], grads[0, 1, 1, 1] = -1.0, 3.0
    # Grad-CAM: weights mean(G) = 0.5, 0.5 -> 0.5 at (0,0), 1.0 at (1,1).
    np.testing.assert_allclose(gradcam.class_map("gradcam", fmap, grads)[0], [[0.5, 0], [0, 1]])
    # Grad-CAM++: channel 0: a = 4 / (2*4 + 1*8) = 1/4 at G=2 -> w0 = 0.5; channel 1 (sum A = 2):
    # at G=-1 the denominator 2 - 2 is 0 (a = 0), at G=3 a = 9 / (18 + 54) = 1/8 -> w1 = 3/8.
    # Map 0.5 at (0,0), 0.75 at (1,1).
    np.testing.assert_allclose(
        gradcam.class_map("gradcam_pp", fmap, grads)[0], [[2 / 3, 0], [0, 1]]
    )
    # HiResCAM: G * A summed: 2 at (0,0), 6 at (1,1) (the -1 gradient meets no activation).
    np.testing.assert_allclose(gradcam.class_map("hirescam", fmap, grads)[0], [[1 / 3, 0], [0, 1]])
    # LayerCAM: ReLU(G) * A summed: 2 at (0,0), 6 at (1,1).
    np.testing.assert_allclose(gradcam.class_map("layercam", fmap, grads)[0], [[1 / 3, 0], [0, 1]])
    # No positive evidence: blank.
    assert not gradcam.class_map("layercam", fmap, -np.abs(grads)).any()
    # Where two channels fire with opposite gradients, HiResCAM nets them out and LayerCAM keeps
    # the positive one: location 0 has A = (1, 1), G = (2, -1); location 1 A = (1, 0), G = (1, 0).
    both = np.array([[[[1.0, 1.0], [1.0, 0.0]]]])
    signed = np.array([[[[2.0, -1.0], [1.0, 0.0]]]])
    np.testing.assert_allclose(gradcam.class_map("hirescam", both, signed)[0], [[1.0, 1.0]])
    np.testing.assert_allclose(gradcam.class_map("layercam", both, signed)[0], [[1.0, 0.5]])
    with pytest.raises(ValueError, match="scorecam"):
        gradcam.class_map("scorecam", fmap, grads)


def test_layer_maps_gradcam_is_the_books_gradcam():
    model = mini_xception(image_size=48, augmentation=None, dropout=0.0)
    images = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
    found = gradcam.layer_maps(
        model, ["block3_add", "block5_add"], images, methods=["gradcam", "layercam"]
    )
    book = gradcam.heatmaps(gradcam.split_model(model, "block5_add", "dog_probability"), images)
    np.testing.assert_allclose(found.maps["block5_add"]["gradcam"], book.heatmaps, atol=1e-5)
    np.testing.assert_array_equal(found.classes, book.classes)
    assert found.maps["block3_add"]["layercam"].shape == (3, 6, 6)


def test_the_other_recipes_are_options_of_the_one_heatmap_call():
    # heatmaps(method=...) at one layer gives what layer_maps gives for that recipe there (layer_maps
    # works in float64, heatmaps in the network's float32), and names an unknown recipe.
    model = mini_xception(image_size=48, augmentation=None, dropout=0.0)
    images = np.random.default_rng(1).integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
    cam = gradcam.split_model(model, "block3_add", "dog_probability")
    found = gradcam.layer_maps(model, ["block3_add"], images, methods=["hirescam", "gradcam_pp"])
    for method in ("hirescam", "gradcam_pp"):
        result = gradcam.heatmaps(cam, images, method=method)
        np.testing.assert_allclose(result.heatmaps, found.maps["block3_add"][method], atol=1e-5)
        np.testing.assert_array_equal(result.classes, found.classes)
    with pytest.raises(ValueError, match="scorecam"):
        gradcam.heatmaps(cam, images, method="scorecam")


def test_one_pass_gives_every_layers_maps_as_a_cut_at_that_layer_alone_would():
    # Cut at three blocks at once, 5 images in batches of 2 (the last one padded): each block's
    # HiResCAM is the one of the old recipe, the network split at that block alone and the logit
    # of the predicted class differentiated with respect to its output.
    model = mini_xception(image_size=48, augmentation=None, dropout=0.0)
    images = np.random.default_rng(2).integers(0, 256, (5, 48, 48, 3), dtype=np.uint8)
    layers = ["block3_add", "block1_add", "block5_add"]
    found = gradcam.layer_maps(model, layers, images, methods=["hirescam"], batch_size=2)
    assert list(found.maps) == layers  # in the order asked for, whatever the depth
    dense = model.get_layer("dog_probability")
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in (dense.kernel, dense.bias))
    x = images.astype(np.float32)
    for layer in layers:
        fmap, grads, logits = _split_at(model, layer, x, kernel, bias)
        expected = gradcam.class_map("hirescam", fmap.astype(np.float64), grads.astype(np.float64))
        np.testing.assert_allclose(found.maps[layer]["hirescam"], expected, atol=1e-4)
    np.testing.assert_array_equal(found.classes, (logits[:, 0] >= 0).astype(int))


def _split_at(model, layer, x, kernel, bias):
    """The old recipe: the network split at ``layer`` alone; its feature maps, the gradient of
    the predicted class's logit (z for dog, -z for cat) with respect to them, and the logits."""
    from petvision.interpret.methods.gradients import value_and_grad

    head = keras.Model(model.get_layer(layer).output, model.get_layer("dog_probability").input)
    fmap = keras.ops.convert_to_numpy(
        keras.Model(model.inputs[0], model.get_layer(layer).output)(x)
    )
    logits = keras.ops.convert_to_numpy(head(fmap)) @ kernel + bias
    sign = np.where(logits[:, 0] >= 0, 1.0, -1.0).astype(np.float32)
    _, grads = value_and_grad(
        lambda f: keras.ops.sum(sign * (keras.ops.matmul(head(f), kernel)[:, 0] + bias[0]))
    )(fmap)
    return fmap, grads, logits


def test_a_cut_model_explains_its_weights_as_they_are_now():
    # The sanity check randomizes the weights of a model already cut: the compiled pass takes
    # them as arguments, so the maps follow. Negating the output layer flips every decision.
    model = mini_xception(image_size=32, augmentation=None, dropout=0.0)
    images = np.random.default_rng(3).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    cam = gradcam.split_model(model, ["block2_add", "block3_add"], "dog_probability")
    before = gradcam.cut_maps(cam, images, methods=["hirescam"])
    dense = model.get_layer("dog_probability")
    kernel, bias = dense.get_weights()
    dense.set_weights([-kernel, -bias])
    after = gradcam.cut_maps(cam, images, methods=["hirescam"])
    fresh = gradcam.layer_maps(model, ["block2_add", "block3_add"], images, methods=["hirescam"])
    np.testing.assert_array_equal(after.classes, 1 - before.classes)
    np.testing.assert_array_equal(after.classes, fresh.classes)
    for layer in ("block2_add", "block3_add"):
        np.testing.assert_allclose(
            after.maps[layer]["hirescam"], fresh.maps[layer]["hirescam"], atol=1e-6
        )


# --------------------------------------------------------------------------- localization scores


def test_localization_scores_on_hand_made_maps():
    masks = np.ones((2, 4, 4, 1), np.uint8)
    masks[:, :2, :2] = 0  # a pet on the top-left quarter: area 0.25
    heat = np.zeros((2, 4, 4), np.float32)
    heat[0, 0, 0], heat[0, 3, 3] = 1.0, 0.5  # 2/3 on the pet, peak on it
    heat[1, 0, 1], heat[1, 2, 2] = 0.25, 1.0  # 1/5 on the pet, peak off it
    s = localization.scores(heat, masks)
    assert s["heat_on_pet"] == pytest.approx((2 / 3 + 1 / 5) / 2)  # 13/30
    assert s["heat_ratio"] == pytest.approx(13 / 30 / 0.25)  # 1.733: below the 2x target
    assert s["pointing_game"] == 0.5 and s["pet_area"] == 0.25


def test_outline_distance_by_hand():
    pet = np.zeros((8, 8), bool)
    pet[2:6, 2:6] = True  # a 4x4 square
    d = localization.outline_distance(pet, limit=2)
    assert d[2, 2] == d[2, 4] == -1 and d[3, 3] == d[4, 4] == -2  # its edge, then its core
    assert d[1, 1] == d[6, 3] == 1 and d[0, 0] == d[7, 7] == 2  # one ring out, two rings out
    cut = np.zeros((8, 8), bool)
    cut[:, :4] = True  # a pet cut by the image's left edge has no outline there: column 0
    # is the farthest from it (beyond the limit: -(3 + 1)), not an edge pixel (-1)
    assert list(localization.outline_distance(cut, limit=3)[4]) == [-4, -3, -2, -1, 1, 2, 3, 4]


def test_heat_by_distance_to_the_outline_on_hand_made_maps():
    masks = np.ones((3, 64, 64, 1), np.uint8)
    masks[:, 16:48, 16:48] = 0  # a 32x32 pet in the middle: a quarter of the image
    distance = localization.outline_distance(masks[0, ..., 0] == 0, limit=12)
    core = (distance < -12).astype(np.float32)  # 8x8 deep inside
    band = (np.abs(distance) <= 4).astype(np.float32)  # the outline, 4 px either side
    blank = np.zeros((64, 64), np.float32)
    out = localization.by_outline_distance(np.stack([core, band, blank]), masks)
    bands = out["bands"]
    assert list(bands) == [
        "inside_over_12",
        "inside_9_to_12",
        "inside_5_to_8",
        "inside_1_to_4",
        "outside_1_to_4",
        "outside_5_to_8",
        "outside_9_to_12",
        "outside_over_12",
    ]
    # The blank map adds to no heat share; the core puts all of its own deep inside, the band
    # 448 of its 1,024 pixels (32^2 - 24^2) inside and 576 (40^2 - 32^2) outside.
    assert bands["inside_over_12"]["heat"] == pytest.approx((1 + 0) / 2)
    assert bands["inside_1_to_4"]["heat"] == pytest.approx(448 / 1024 / 2)
    assert bands["outside_1_to_4"]["heat"] == pytest.approx(576 / 1024 / 2)
    assert bands["inside_over_12"]["area"] == pytest.approx(64 / 4096)
    assert bands["outside_over_12"]["area"] == pytest.approx(1 - 56**2 / 4096)
    assert sum(b["area"] for b in bands.values()) == pytest.approx(1)
    assert sum(b["heat"] for b in bands.values()) == pytest.approx(1)
    # A map that is only the outline: 448/1024 of its heat on a pet of a quarter of the image.
    assert out["outline_band_px"] == 4
    assert out["outline_band_ratio"] == pytest.approx(448 / 1024 / 0.25)  # 1.75: below 2x
    assert localization.scores(band[None], masks[:1])["heat_ratio"] == pytest.approx(1.75)
    html = report_tables.by_outline_distance({"localization": {"outline": out}})
    assert "by distance to the outline of the pet" in html and "1.750x" in html
    # Read back from metrics.json, the heat of all-blank maps is null: shown as n/a.
    blank_only = {
        "bands": {"inside_1_to_4": {"heat": None, "area": 0.5}},
        **{k: out[k] for k in ("outline_band_px", "outline_band_ratio")},
    }
    assert "<td>n/a</td><td>0.500</td><td>n/a</td>" in report_tables.by_outline_distance(
        {"localization": {"outline": blank_only}}
    )


def test_the_outline_picture_is_drawn(tmp_path):
    masks = np.ones((1, 32, 32, 1), np.uint8)
    masks[:, 8:24, 8:24] = 0
    maps = np.random.default_rng(0).random((1, 32, 32)).astype(np.float32)
    path = figures.heat_by_outline_distance(
        localization.by_outline_distance(maps, masks), tmp_path / "outline.png"
    )
    assert path.read_bytes().startswith(b"\x89PNG")


def test_fusing_takes_the_larger_evidence_of_each_layer_at_the_image_size():
    coarse = np.array([[[1.0, 0.0], [0.0, 0.0]]], np.float32)  # top-left quarter
    fine = np.zeros((1, 4, 4), np.float32)
    fine[0, 3, 3] = 1.0
    fused = localization.fuse([coarse, fine], (4, 4))
    assert (
        fused.shape == (1, 4, 4) and fused[0, 3, 3] == 1.0 and fused[0, 0, 0] == pytest.approx(1.0)
    )
    assert fused.max() == 1.0


def test_per_layer_table_and_its_rows():
    model = mini_xception(image_size=48, augmentation=None, dropout=0.0)
    images = np.random.default_rng(1).integers(0, 256, (2, 48, 48, 3), dtype=np.uint8)
    masks = np.ones((2, 48, 48, 1), np.uint8)
    masks[:, 12:36, 12:36] = 0
    found = gradcam.layer_maps(
        model, BLOCK_OUTPUTS["mini_xception"], images, methods=["gradcam", "layercam"]
    )
    table = localization.per_layer(found, model, masks)
    assert list(table) == list(BLOCK_OUTPUTS["mini_xception"])
    assert [row["map_size"] for row in table.values()] == [22, 11, 6, 3, 2]
    rows = localization.layer_rows(table, ["gradcam", "layercam"])
    assert [r["depth"] for r in rows] == [1, 2, 3, 4, 5] and "layercam_heat_ratio" in rows[0]
    for row in rows:
        expected = localization.scores(
            localization.upsampled(found.maps[row["layer"]]["gradcam"], (48, 48)), masks
        )
        assert row["gradcam_heat_on_pet"] == pytest.approx(expected["heat_on_pet"], abs=1e-6) or (
            np.isnan(row["gradcam_heat_on_pet"]) and np.isnan(expected["heat_on_pet"])
        )


# --------------------------------------------------------------------------- deletion and insertion


def pixel_zero_red(images: np.ndarray) -> np.ndarray:
    """A 'classifier' whose P(dog) is the red level of pixel (0, 0), from 0 to 1."""
    return np.asarray(images, np.float64)[:, 0, 0, 0] / 255


def test_deletion_and_insertion_curves_and_their_areas_by_hand():
    image = np.zeros((1, 2, 2, 3), np.uint8)
    image[..., 0] = 255
    hottest_first = np.array([[0, 1, 2, 3]])
    deletion, insertion = faithfulness.curves(
        pixel_zero_red, image, hottest_first, np.array([1]), steps=4, fill=0
    )
    np.testing.assert_allclose(deletion, [[1, 0, 0, 0, 0]])  # the evidence goes first
    np.testing.assert_allclose(insertion, [[0, 1, 1, 1, 1]])
    # Trapezoids at dx = 1/4: deletion 1/8, insertion 7/8.
    assert faithfulness.auc(deletion)[0] == pytest.approx(0.125)
    assert faithfulness.auc(insertion)[0] == pytest.approx(0.875)
    # The other class's probability is 1 - P(dog).
    deletion, _ = faithfulness.curves(
        pixel_zero_red, image, hottest_first, np.array([0]), steps=4, fill=0
    )
    np.testing.assert_allclose(deletion, [[0, 1, 1, 1, 1]])
    # Pixel (0, 0) removed last: the deletion area is 7/8.
    last = np.array([[3, 2, 1, 0]])
    deletion, _ = faithfulness.curves(pixel_zero_red, image, last, np.array([1]), steps=4, fill=0)
    assert faithfulness.auc(deletion)[0] == pytest.approx(0.875)


def test_the_curves_of_several_orders_in_one_call_are_each_orders_own():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
    orders = np.stack([np.stack([rng.permutation(16) for _ in range(3)]) for _ in range(2)])
    classes = np.array([1, 0, 1])
    calls = []

    def score(batch):
        calls.append(len(batch))
        return pixel_zero_red(batch)

    together = faithfulness.all_curves(score, images, orders, classes, steps=4, fill=9)
    assert calls == [2 * 3 * 2 * 5]  # every variant of every order in one call
    for o in range(2):
        deletion, insertion = faithfulness.curves(
            pixel_zero_red, images, orders[o], classes, steps=4, fill=9
        )
        np.testing.assert_array_equal(together[o, :, 0], deletion)
        np.testing.assert_array_equal(together[o, :, 1], insertion)


def test_classifier_scores_pad_a_short_last_batch_and_keep_each_images_score():
    model = mini_xception(image_size=32, augmentation=None, dropout=0.0)
    images = np.random.default_rng(4).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    direct = keras.ops.convert_to_numpy(model(images.astype(np.float32), training=False))[:, 0]
    for batch_size in (2, 5, 8):
        scored = faithfulness.classifier_scores(model, batch_size=batch_size)(images)
        np.testing.assert_allclose(scored, direct, rtol=1e-5, atol=1e-6)
    made = faithfulness.Variants(5, lambda indices: images[indices])
    np.testing.assert_allclose(faithfulness.classifier_scores(model, 2)(made), direct, atol=1e-6)


def test_pixel_order_is_hottest_first_with_ties_in_random_order():
    heat = np.array([[0.0, 0.5], [0.0, 1.0]])
    orders = {tuple(faithfulness.pixel_order(heat, np.random.default_rng(s))) for s in range(20)}
    assert all(o[:2] == (3, 1) and set(o[2:]) == {0, 2} for o in orders) and len(orders) == 2
    np.testing.assert_array_equal(faithfulness.counts(9, 3), [0, 3, 6, 9])


def test_a_map_on_the_evidence_beats_a_random_order():
    images = np.zeros((40, 2, 2, 3), np.uint8)
    images[..., 0] = 255
    heat = np.zeros((40, 2, 2), np.float32)
    heat[:, 0, 0] = 1.0
    metrics, curves = faithfulness.deletion_insertion(
        pixel_zero_red, images, {"map": heat}, np.ones(40, int), steps=4, fill=0, seed=0
    )
    assert metrics["deletion_auc"]["map"] == pytest.approx(0.125)
    assert metrics["insertion_auc"]["map"] == pytest.approx(0.875)
    # Random: pixel (0,0) removed at step j+1, j uniform in 0..3 -> deletion area (j + 0.5)/4,
    # 0.5 on average.
    assert (
        0.3 < metrics["deletion_auc"]["random"] < 0.7
        and 0.3 < metrics["insertion_auc"]["random"] < 0.7
    )
    assert list(curves) == [
        "fraction",
        "map_deletion",
        "map_insertion",
        "random_deletion",
        "random_insertion",
    ]


def test_occlusion_by_the_trimaps_by_hand():
    # A 4x4 image whose pet is an L: pet at (1,1) and (2,1), border at (2,2); its bounding box
    # (rows 1-2, columns 1-2) adds the background pixel (1,2).
    masks = np.ones((1, 4, 4, 1), np.uint8)
    masks[0, 1, 1] = masks[0, 2, 1] = 0
    masks[0, 2, 2] = 2
    images = np.full((1, 4, 4, 3), 200, np.uint8)
    box = faithfulness.pet_box(localization.pet_region(masks[0]))
    assert box.sum() == 4 and box[1, 2]
    assert (faithfulness.occluded(images, masks, "background", 7)[0, ..., 0] == 7).sum() == 13
    assert (faithfulness.occluded(images, masks, "pet", 7)[0, ..., 0] == 7).sum() == 3
    assert (faithfulness.occluded(images, masks, "pet_box", 7)[0, ..., 0] == 7).sum() == 4

    def looks_at(row, col):
        return lambda batch: (np.asarray(batch)[:, row, col, 0] != 7).astype(np.float64)

    on_pet = faithfulness.occlusion_accuracy(looks_at(2, 1), images, masks, np.array([1]), 7)
    assert on_pet == {
        "images": 1,
        "nothing_greyed": 1.0,
        "background_greyed": 1.0,
        "pet_greyed": 0.0,
        "pet_box_greyed": 0.0,
    }
    on_background = faithfulness.occlusion_accuracy(looks_at(0, 0), images, masks, np.array([1]), 7)
    assert on_background["background_greyed"] == 0.0 and on_background["pet_greyed"] == 1.0
    in_the_box = faithfulness.occlusion_accuracy(looks_at(1, 2), images, masks, np.array([1]), 7)
    assert in_the_box["pet_greyed"] == 1.0 and in_the_box["pet_box_greyed"] == 0.0


# --------------------------------------------------------------------------- rank correlation


def test_ranks_and_spearman_by_hand():
    np.testing.assert_allclose(sanity.ranks(np.array([10, 20, 20, 5])), [1, 2.5, 2.5, 0])
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert sanity.spearman(a, a * 10 + 3) == pytest.approx(1.0)
    assert sanity.spearman(a, -a) == pytest.approx(-1.0)
    # Ranks 0,1,2,3 against 0,2,1,3: 1 - 6 * (1 + 1) / (4 * 15) = 0.8.
    assert sanity.spearman(a, np.array([[1.0, 3.0], [2.0, 4.0]])) == pytest.approx(0.8)
    assert sanity.spearman(a, np.zeros((2, 2))) == 0.0  # a blank map kept nothing
    assert np.isnan(sanity.spearman(np.zeros((2, 2)), a))  # nothing to compare with


def test_cascade_groups_go_from_the_output_down_to_the_first_block_with_the_stem():
    model = mini_xception(image_size=48, augmentation=None, dropout=0.0)
    groups = sanity.cascade_groups(model, BLOCK_OUTPUTS["mini_xception"])
    assert [g for g, _ in groups] == [
        "output",
        "block5_add",
        "block4_add",
        "block3_add",
        "block2_add",
        "block1_add",
    ]
    named = dict(groups)
    assert named["output"] == ["dog_probability"]
    assert set(named["block5_add"]) == {
        "block5_bn1",
        "block5_sepconv1",
        "block5_bn2",
        "block5_sepconv2",
        "block5_residual",
    }
    assert "stem_conv" in named["block1_add"]
    assert sum(len(v) for v in named.values()) == len(
        [lay for lay in model.layers if lay.trainable_weights]
    )


def test_survivors_are_the_maps_still_correlated_once_all_is_random():
    result = {
        "rank_correlation": {"a": {"1_output": 0.9, "2_b": 0.8}, "b": {"1_output": 0.9, "2_b": 0.1}}
    }
    assert sanity.survivors(result, 0.5) == ["a"]
    metrics = {
        "sanity": {
            "images": 2,
            "max_correlation": 0.5,
            "rank_correlation": result["rank_correlation"],
            "survives_randomization": {"a": 1, "b": 0},
        }
    }
    warning = report_tables.sanity_warnings(metrics)
    assert "the a maps survive randomization" in warning and "the b maps" not in warning
    metrics["sanity"]["survives_randomization"]["a"] = 0
    assert report_tables.sanity_warnings(metrics) == ""
    assert "depend on what the classifier learned" in report_tables.sanity_check(metrics)


# --------------------------------------------------------------------------- planted evidence

SIZE = 24
PATCH = (slice(3, 9), slice(14, 20))  # 36 of 576 pixels: area 1/16


def planted_model() -> keras.Model:
    """Evidence for 'dog' is red (R - G - B > 0), and nothing else counts: two blocks, a global
    average and a sigmoid, with hand-set weights. On grey images with a red patch, all the
    evidence is the patch; a fresh initialization knows nothing about red."""
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = layers.Rescaling(1 / 255)(inputs)
    b1 = layers.Conv2D(4, 3, padding="same", activation="relu", name="b1")
    b2 = layers.Conv2D(4, 1, activation="relu", name="b2")
    x = b2(b1(x))
    x = layers.GlobalAveragePooling2D()(x)
    dense = layers.Dense(1, activation="sigmoid", name="dog_probability")
    model = keras.Model(inputs, dense(x))
    kernel = np.zeros((3, 3, 3, 4), np.float32)
    kernel[1, 1, :, 0] = [1.0, -1.0, -1.0]  # the centre tap: red minus green minus blue
    b1.set_weights([kernel, np.zeros(4, np.float32)])
    b2.set_weights([np.eye(4, dtype=np.float32)[None, None], np.zeros(4, np.float32)])
    dense.set_weights(
        [np.array([[50.0], [0.0], [0.0], [0.0]], np.float32), np.array([-1.0], np.float32)]
    )
    return model


def planted_images(count: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (count, SIZE, SIZE, 1), dtype=np.uint8)
    images = np.repeat(grey, 3, axis=-1)
    images[:, PATCH[0], PATCH[1]] = (230, 30, 30)
    masks = np.ones((count, SIZE, SIZE, 1), np.uint8)
    masks[:, PATCH[0], PATCH[1]] = 0
    return images, masks


def test_a_planted_region_is_where_the_maps_land_and_randomization_moves_them():
    model, (images, masks) = planted_model(), planted_images()

    def maps_fn(candidate):
        found = gradcam.layer_maps(
            candidate,
            ["b1", "b2"],
            images,
            methods=["gradcam", "layercam"],
            classes=np.ones(len(images), int),
        )
        return {
            "gradcam": localization.upsampled(found.maps["b2"]["gradcam"], (SIZE, SIZE)),
            "layercam": localization.fuse(
                [found.maps["b1"]["layercam"], found.maps["b2"]["layercam"]], (SIZE, SIZE)
            ),
        }

    trained = maps_fn(model)
    for name, maps in trained.items():
        s = localization.scores(maps, masks)
        assert s["heat_on_pet"] == pytest.approx(1.0) and s["pointing_game"] == 1.0, name
        assert s["heat_ratio"] == pytest.approx(16.0), name  # all the heat on 1/16 of the image

    result, kept = sanity.cascade(model, ["b1", "b2"], maps_fn, seed=3, keep=2)
    assert list(result["rank_correlation"]["gradcam"]) == ["1_output", "2_b2", "3_b1"]
    assert len(kept["layercam"]) == 4 and kept["layercam"][0].shape == (2, SIZE, SIZE)
    assert np.allclose(
        model.get_layer("b1").get_weights()[0][1, 1, :, 0], [1, -1, -1]
    )  # the original is kept
    # Once every weight is random, the maps no longer rank the pixels as before, and most of their
    # heat is off the patch (chance: 1/16 of it).
    for name in ("gradcam", "layercam"):
        assert result["rank_correlation"][name]["3_b1"] < 0.3, name
        assert sanity.survivors(result, 0.5) == []
        randomized = localization.scores(kept[name][-1], masks[:2])
        assert randomized["heat_on_pet"] < 0.3, name


# --------------------------------------------------------------------------- segmentation breakdown


def test_segmentation_iou_by_class_and_pet_size_by_hand():
    true = np.ones((2, 2, 4), np.uint8)  # background everywhere...
    true[0, 0, 0] = 0  # image 0: one pet pixel (area 1/8)
    true[1, 0, :2], true[1, 1, :2] = 0, 2  # image 1: two pet and two border pixels (area 1/2)
    pred = true.copy()
    pred[0, 0, 0] = 1  # image 0: the pet missed
    pred[1, 1, 0] = 0  # image 1: a border pixel called pet
    # Over both images: pet TP 2, FP 1, FN 1 -> 2/4; border TP 1, FN 1 -> 1/2; background TP 11,
    # FP 1 -> 11/12.
    ious = segmentation.class_ious(true, pred)
    assert ious == pytest.approx({"pet": 0.5, "background": 11 / 12, "border": 0.5})
    buckets = segmentation.by_pet_size(true, pred, [0.3])
    assert list(buckets) == ["under_30pct", "30pct_up"]
    assert buckets["under_30pct"] == pytest.approx(
        {"images": 1, "pet_area": 0.125, "mean_pet_iou": 0.0, "border_iou": float("nan")},
        nan_ok=True,
    )
    # Image 1: pet IoU 2/3 (TP 2, FP 1), border IoU 1/2.
    assert buckets["30pct_up"] == pytest.approx(
        {"images": 1, "pet_area": 0.5, "mean_pet_iou": 2 / 3, "border_iou": 0.5}
    )
    kinds = segmentation.error_kinds(true[0], pred[0])
    assert kinds["pet_missed"].sum() == 1 and not kinds["pet_invented"].any()
    shares = segmentation.error_shares(true, pred)
    assert shares == pytest.approx(
        {"pet_missed": 1 / 16, "pet_invented": 0.0, "border_confused": 1 / 16}
    )
    assert segmentation.bucket_names([0.15, 0.3]) == [
        "under_15pct",
        "15_to_30pct",
        "30pct_up",
    ]


def test_error_picture_colours_each_kind():
    true = np.array([[0, 1], [2, 1]], np.uint8)
    pred = np.array([[1, 0], [0, 1]], np.uint8)  # pet missed, pet invented, border confused, right
    kinds = segmentation.error_kinds(true, pred)
    picture = pixels.error_picture(np.full((2, 2, 3), 100, np.uint8), kinds)
    colours = pixels.ERROR_COLOURS
    assert (
        tuple(picture[0, 0]) == colours["pet_missed"]
        and tuple(picture[0, 1]) == colours["pet_invented"]
    )
    assert tuple(picture[1, 0]) == colours["border_confused"] and tuple(picture[1, 1]) == (
        100,
        100,
        100,
    )


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "override, key",
    [
        ("visualize.localization.method=cam", "visualize.localization.method"),
        ("visualize.localization.min_stride=32", "visualize.localization.max_stride"),
        ("visualize.localization.min_stride=0", "visualize.localization.min_stride"),
        ("visualize.faithfulness.fill=300", "visualize.faithfulness.fill"),
        ("visualize.sanity.images=-1", "visualize.sanity.images"),
        (
            "visualize.segmentation.pet_size_edges=[0.3,0.1]",
            "visualize.segmentation.pet_size_edges",
        ),
    ],
)
def test_bad_interpretation_settings_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config.load(config.compose([override]))


def test_the_configurable_methods_are_the_recipes():
    assert {m.value for m in config.CamMethod} == set(gradcam.METHODS)
