"""``python -m petvision.export``: both trained models as TensorFlow SavedModels for deployment.

    python -m petvision.export                                   # models/*.keras -> exported/
    python -m petvision.export export.classifier=models:/petvision-classifier@champion

Each SavedModel (``<export.output>/classifier``, ``<export.output>/segmentation``) has one
serving signature, ``serving_default`` (also callable as ``.serve``), taking a batch of uint8
RGB images at the model's training size, ``images: uint8[None, size, size, 3]``, and returning
P(dog) ``[None, 1]`` or the per-pixel class probabilities ``[None, size, size, 3]`` (pet,
background, border). Resizing a photo to that size is the client's part: do it as training did
(:func:`petvision.data.images.resize_image` with the interpolation in ``export.json``), since another
library's resize gives other pixels. A model trained in mixed precision is exported in float32.
The probabilities are those ``predict`` gives: at the temperature of the model's trust file
(petvision.evaluation.trust; 1 without one), recorded in ``export.json`` with what the model was
trained on. Not a pipeline stage: nothing in dvc.yaml reads ``export.*``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from petvision import inference
from petvision.cli import stage
from petvision.config import Config, Task, task_config
from petvision.core import atomic
from petvision.core.errors import ConfigError

log = logging.getLogger("petvision.export")  # not __name__: that is "__main__" under python -m

FOLDERS = {Task.classification: "classifier", Task.segmentation: "segmentation"}
SIGNATURE = "serving_default"


def temperature(loaded: inference.LoadedModel) -> float:
    return float(loaded.trust.temperature) if loaded.trust is not None else 1.0


def export_savedmodel(loaded: inference.LoadedModel, path: Path) -> None:
    """Write ``loaded``'s model to ``path`` as a SavedModel with a uint8 serving signature that
    answers at the model's temperature."""
    import keras
    import tensorflow as tf

    from petvision.evaluation import features

    model, size, t = loaded.model, loaded.size, temperature(loaded)
    binary = features.is_sigmoid_classifier(model)
    head = model.layers[-1]
    # As evaluation/features.py: a sigmoid head's logit from its Dense layer's input (a
    # probability rounded to 1.0 in float32 has no logit left), a softmax's from its log.
    network = keras.Model(model.inputs, head.input) if binary and t != 1.0 else model
    archive = keras.export.ExportArchive()
    archive.track(model)  # its variables are the network's and the head's

    def serve(images: Any) -> Any:
        # The model scales uint8-range floats itself (its Rescaling layer), as in training.
        out = network(tf.cast(images, tf.float32), training=False)
        if t == 1.0:
            return out
        if binary:
            logit = tf.matmul(out, head.kernel) + (head.bias if head.use_bias else 0.0)
            return tf.sigmoid(logit / t)
        return tf.nn.softmax(tf.math.log(tf.maximum(out, 1e-12)) / t, axis=-1)

    archive.add_endpoint(
        name="serve",
        fn=serve,
        input_signature=[tf.TensorSpec((None, size, size, 3), tf.uint8, name="images")],
    )
    archive.write_out(str(path), verbose=False)


def run_export(cfg: Config) -> dict[str, Any]:
    """Export both models into ``export.output`` (replaced whole); return what was written."""
    e = cfg.export
    out = Path(e.output).expanduser().absolute()
    if out.exists() and (
        not out.is_dir() or (any(out.iterdir()) and not (out / "export.json").is_file())
    ):
        raise ConfigError(
            f"export.output={out}: holds files export did not write, and the folder is "
            "replaced whole: choose another folder or empty it"
        )
    models = {
        task: inference.load_model(task_config(cfg, task), spec, cfg.tracking)
        for task, spec in ((Task.classification, e.classifier), (Task.segmentation, e.segmenter))
    }
    summary: dict[str, Any] = {}
    with atomic.atomic_dir(out) as tmp:
        for task, loaded in models.items():
            export_savedmodel(loaded, tmp / FOLDERS[task])
            summary[task] = {
                "savedmodel": FOLDERS[task],
                "source": loaded.source,
                "signature": SIGNATURE,
                "input": f"uint8[None, {loaded.size}, {loaded.size}, 3]",
                "interpolation": loaded.interpolation,
                "temperature": temperature(loaded),
                "trained_on": loaded.provenance,
            }
        atomic.write_json(tmp / "export.json", summary)
    log.info("exported %s to %s", ", ".join(FOLDERS.values()), out)
    return summary


if __name__ == "__main__":
    stage.main(run_export, writes=[])
