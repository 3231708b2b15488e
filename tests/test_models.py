"""The model builders mirror the book's architectures exactly (chapter 9.1 and 9.3)."""

import numpy as np
import pytest

from petvision.config import (
    AugmentationConfig,
    ClassificationModelConfig,
    SegmentationModelConfig,
    architectures,
)
from petvision.models.classification import (
    build_classifier,
    mini_xception,
    residual_convnet,
    simple_convnet,
)
from petvision.models.segmentation import book_model, build_segmentation_model, unet_model

# The book's segmentation model (chapter 9.1): layer, output shape at 200x200x3, parameters.
BOOK_TABLE = [
    ("Rescaling", (200, 200, 3), 0),
    ("Conv2D", (100, 100, 64), 1_792),
    ("Conv2D", (100, 100, 64), 36_928),
    ("Conv2D", (50, 50, 128), 73_856),
    ("Conv2D", (50, 50, 128), 147_584),
    ("Conv2D", (25, 25, 256), 295_168),
    ("Conv2D", (25, 25, 256), 590_080),
    ("Conv2DTranspose", (25, 25, 256), 590_080),
    ("Conv2DTranspose", (50, 50, 256), 590_080),
    ("Conv2DTranspose", (50, 50, 128), 295_040),
    ("Conv2DTranspose", (100, 100, 128), 147_584),
    ("Conv2DTranspose", (100, 100, 64), 73_792),
    ("Conv2DTranspose", (200, 200, 64), 36_928),
    ("Conv2D", (200, 200, 3), 1_731),
]


def counts(model):
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    frozen = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    return trainable + frozen, trainable, frozen


def test_book_segmentation_model_matches_the_table_layer_by_layer():
    model = book_model(200, 3)
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    got = [
        (type(layer).__name__, tuple(layer.output.shape[1:]), layer.count_params())
        for layer in layers
    ]
    assert got == BOOK_TABLE
    assert counts(model) == (2_880_643, 2_880_643, 0)
    assert layers[-1].activation.__name__ == "softmax"


def test_segmentation_builder_uses_the_config_and_keeps_the_book_model_the_default():
    model = build_segmentation_model(SegmentationModelConfig(name="book", num_classes=3), 96)
    assert model.output.shape[1:] == (96, 96, 3)
    assert model.count_params() == 2_880_643  # convolutions do not depend on the input size


def test_unet_option_keeps_resolution_and_has_skip_connections():
    model = unet_model(96, 3)
    assert model.output.shape[1:] == (96, 96, 3)
    assert [layer.name for layer in model.layers if layer.name.endswith("_skip")] == [
        "up3_skip",
        "up2_skip",
        "up1_skip",
    ]


def test_mini_xception_counts_and_spatial_sizes():
    model = mini_xception(180)
    assert counts(model) == (721_857, 718_849, 3_008)
    adds = [tuple(model.get_layer(f"block{i}_add").output.shape[1:3]) for i in range(1, 6)]
    assert tuple(model.get_layer("stem_conv").output.shape[1:3]) == (176, 176)
    assert adds == [(88, 88), (44, 44), (22, 22), (11, 11), (6, 6)]
    assert model.get_layer(architectures.last_conv_layer("mini_xception")).output.shape[1:] == (
        6,
        6,
        512,
    )
    # Separable convolutions everywhere but the first layer.
    assert type(model.get_layer("stem_conv")).__name__ == "Conv2D"
    assert type(model.get_layer("block1_sepconv1")).__name__ == "SeparableConv2D"


def test_simple_convnet_and_residual_demo_counts():
    assert counts(simple_convnet(180)) == (991_041, 991_041, 0)
    assert counts(residual_convnet(32)) == (297_697, 297_697, 0)


@pytest.mark.parametrize("size", [32, 97])
def test_thin_strided_projection_computes_the_books_strided_1x1_convolution(size):
    import keras

    from petvision.models.classification import strided_pointwise_projection

    inputs = keras.Input((size, size, 3))
    ours = keras.Model(inputs, strided_pointwise_projection(inputs, 32, name="proj"))
    books = keras.Sequential([keras.Input((size, size, 3)), keras.layers.Conv2D(32, 1, strides=2)])
    assert ours.count_params() == books.count_params() == 3 * 32 + 32
    books.set_weights(ours.get_layer("proj").get_weights())
    x = np.random.default_rng(2).normal(size=(2, size, size, 3)).astype("float32")
    np.testing.assert_allclose(
        ours.predict(x, verbose=0), books.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )


@pytest.mark.slow
def test_residual_demo_trains_on_images_of_96_px_and_more(tmp_path):
    """Regression: the book's strided 1x1 projection of the 3-channel image crashed TensorFlow's
    CPU training (oneDNN heap corruption) at 96 px and above. Run in a child so a crash is a
    failure here, not the end of the test session."""
    import subprocess
    import sys

    script = tmp_path / "fit.py"
    script.write_text(
        "import numpy as np\n"
        "from petvision.models.classification import residual_convnet\n"
        "m = residual_convnet(96)\n"
        "m.compile('adam', 'binary_crossentropy')\n"
        "x = np.random.default_rng(0).uniform(0, 255, (64, 96, 96, 3)).astype('float32')\n"
        "m.fit(x, np.arange(64) % 2, batch_size=16, epochs=2, verbose=0)\n"
        "print('trained')\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and "trained" in done.stdout, done.stderr[-2000:]


@pytest.mark.parametrize("name", ["mini_xception", "simple_convnet", "residual_convnet"])
def test_classifier_builder_names_its_last_conv_layer_and_outputs_a_probability(name):
    aug = AugmentationConfig(
        enabled=name != "residual_convnet", flip="horizontal", rotation=0.1, zoom=0.2
    )
    model = build_classifier(
        ClassificationModelConfig(name=name, augmentation=aug, dropout=0.5), 96
    )
    model.get_layer(architectures.last_conv_layer(name))
    out = model.predict(
        np.random.default_rng(0).integers(0, 255, (2, 96, 96, 3), dtype=np.uint8), verbose=0
    )
    assert out.shape == (2, 1) and np.all((out >= 0) & (out <= 1))


def test_augmentation_is_active_in_training_only():
    model = mini_xception(64, dropout=0.0)
    augment = model.get_layer("data_augmentation")
    x = np.random.default_rng(1).integers(0, 255, (4, 64, 64, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(augment(x, training=False)), x)
    assert not np.allclose(np.asarray(augment(x, training=True)), x)


def test_model_code_is_backend_neutral():
    """No TensorFlow in the model builders, so Keras's JAX or PyTorch backends can run them."""
    import re
    from pathlib import Path

    import petvision.models as models

    for source in Path(models.__file__).parent.glob("*.py"):
        text = source.read_text()
        assert not re.search(r"^\s*(import|from)\s+tensorflow|\btf\.[a-z_]", text, re.M), source
