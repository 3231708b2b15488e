"""Stage visualize: what the convnets learned (the book's chapter 9.4).

    python -m petvision.visualize [overrides]     e.g. visualize.gradcam.other_class=true

Reads the trained models (``models/*.keras``) and the preprocessed test/validation arrays, never
MLflow, and writes under ``<paths.reports>/visualize/``, all at once:

    activations/   every channel of every convolution and pooling layer of the classifier, and of
                   the segmentation model's encoder, for one image
    filters/       gradient-ascent patterns of the first filters of chosen classifier layers
    gradcam/       Grad-CAM heatmaps of the classifier's last convolutional block on test images
    layers/        every block's maps, and the default localization method's (interpret/evidence.py)
    faithfulness/  deletion and insertion curves of the maps against a random order
    sanity/        the maps as the weights are randomized, top block first
    segmentation/  predicted masks on validation images, and the worst ones by pet IoU
    metrics.json   localization against the pet masks (default method, book's Grad-CAM, every
                   block), faithfulness, sanity check, segmentation IoU per image, class and pet size
    *.csv          the per-layer table and the curves, for ``dvc plots``
    report.html    one page of the whole run: every stage's metrics and pictures under reports/

``visualize.model=imagenet_xception`` draws the filters and Grad-CAM of the book's ImageNet
Xception instead (its weights come from the internet). Every picture is logged to an MLflow run
of the interpretation experiment, tagged with the training runs it explains, which are tagged
back with this run's id.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime
from pathlib import Path

import numpy as np

from petvision import tracking
from petvision.cli import stage
from petvision.config import Config, Task, TaskConfig, architectures, task_config
from petvision.core import atomic
from petvision.core.errors import ConfigError, DataError
from petvision.data import layout, npy_dataset
from petvision.interpret import (
    activations,
    evidence,
    filters,
    gradcam,
    html_report,
    loading,
    report_tables,
    sections,
)
from petvision.util.nested import flatten, numbers

log = logging.getLogger("petvision.visualize")  # not __name__: that is "__main__" under python -m

FOLDERS = ("activations", "filters", "gradcam", "layers", "faithfulness", "sanity", "segmentation")
TABLES = ("localization_by_layer.csv", "deletion_insertion.csv", "sanity_cascade.csv")


def output_dir(cfg: Config) -> Path:
    return cfg.paths.resolve("reports") / "visualize"


def run_visualize(cfg: Config) -> dict:
    vis = cfg.visualize
    imagenet = None
    if vis.model == "imagenet_xception":
        # First: without the internet this fails in seconds, before anything else is loaded.
        imagenet = loading.load_imagenet_xception(
            vis.imagenet.weights_url, vis.imagenet.class_index_url, vis.imagenet.timeout_s
        )
    trained = (task_config(cfg, Task.classification), task_config(cfg, Task.segmentation))
    classifier, segmenter = (loading.load_trained(t.model_file, t.stage) for t in trained)
    npy = cfg.paths.resolve("npy")
    test = npy_dataset.load_split(npy, Task.classification, "test")
    val = npy_dataset.load_split(npy, Task.segmentation, "val")
    check_inputs(cfg, classifier, segmenter, test, val)
    model_runs = {t.task: read_model_run(t) for t in trained}

    architecture = cfg.classification.model.name
    shown = vis.model if imagenet else architecture
    run_name = f"visualize {shown} {cfg.preset} {datetime.now():%m-%d %H:%M}"
    with tracking.Run(
        cfg,
        "visualize",
        experiment=cfg.tracking.experiments.interpretation,
        run_name=run_name,
        tags={tracking.TASK_TAG: "interpretation", **explained_tags(cfg, model_runs)},
    ) as run:
        out = output_dir(cfg)
        with atomic.atomic_dir(out) as tmp:
            metrics = draw_everything(cfg, classifier, segmenter, imagenet, test, val, tmp)
            atomic.write_json(tmp / "metrics.json", without_nan(metrics))
            html_report.write_report(
                cfg.paths.resolve("reports"),
                tmp / "report.html",
                where={"visualize": tmp},
                title=f"petvision {cfg.preset} run: {cfg.classification.model.name} "
                f"classifier, {cfg.segmentation.model.name} segmentation model",
                notes={"visualize": report_tables.visualize_section(metrics)},
            )
        run.log_metrics(numbers(flatten(metrics)))
        for folder in FOLDERS:
            if (out / folder).is_dir():
                run.log_artifact(out / folder, artifact_path=f"visualize/{folder}")
        for page in ("metrics.json", "report.html", *TABLES):
            if (out / page).is_file():
                run.log_artifact(out / page, artifact_path="visualize")
        link_model_runs(run, model_runs)
    log.info("visualize: pictures and metrics in %s", out)
    return metrics


def check_inputs(
    cfg: Config, classifier, segmenter, test: npy_dataset.Split, val: npy_dataset.Split
) -> None:
    """The arrays must fit the models, and the configured image must exist, before any work."""
    for split, model in ((test, classifier), (val, segmenter)):
        size, expected = split.images.shape[1], loading.input_size(model)
        if size != expected:
            t = task_config(cfg, split.task)
            raise DataError(
                f"{npy_dataset.array_path(cfg.paths.resolve('npy'), t.task, split.name, 'images')} holds "
                f"{size}x{size} images but {t.model_file} takes {expected}x{expected}; "
                f"rerun preprocess and {t.stage} with the same data.{t.task}.image_size"
            )
    index = cfg.visualize.activations.image_index
    smallest = min(len(test), len(val))
    if index >= smallest:
        raise ConfigError(
            f"visualize.activations.image_index={index}: the classification test split has "
            f"{len(test)} images and the segmentation validation split {len(val)}"
        )
    classification = task_config(cfg, Task.classification)
    architecture = classification.model.name
    blocks = classification.architecture.block_outputs
    names = {lay.name for lay in classifier.layers}
    missing = [n for n in (architectures.last_conv_layer(architecture), *blocks) if n not in names]
    if missing:
        raise DataError(
            f"{classification.model_file} has no layer {missing[0]!r}, a Grad-CAM layer of "
            f"classification.model.name={architecture}: it was trained with another "
            f"architecture ({classifier.name}); rerun train_xception"
        )
    if cfg.visualize.model == "trained":
        filters.choose_layers(
            cfg.visualize.filters.layers, architecture, classifier
        )  # raises on a bad name


def draw_everything(
    cfg: Config,
    classifier,
    segmenter,
    imagenet,
    test: npy_dataset.Split,
    val: npy_dataset.Split,
    folder: Path,
) -> dict:
    vis = cfg.visualize
    index = vis.activations.image_index
    sections.draw_activations(
        classifier,
        activations.classifier_layers(classifier),
        test.images[index],
        folder / "activations",
        "classifier",
        vis.activations.images_per_row,
    )
    sections.draw_activations(
        segmenter,
        activations.encoder_layers(segmenter),
        val.images[index],
        folder / "activations",
        "segmentation",
        vis.activations.images_per_row,
    )

    f = vis.filters
    if imagenet is None:
        architecture = cfg.classification.model.name
        probed, scale = (
            classifier,
            255.0,
        )  # the model divides by 255 inside: see filters.filter_patterns
        cam = gradcam.split_model(
            classifier, architectures.last_conv_layer(architecture), "dog_probability"
        )
        class_names, labels = layout.SPECIES_NAMES, np.asarray(test.require("labels"))
    else:
        xception, class_names = imagenet
        architecture = "imagenet_xception"
        # The book feeds its start image in [0.4, 0.6] to Xception as it is: input_scale 1.
        probed, scale = loading.imagenet_conv_base(xception, f.image_size), 1.0
        cam = gradcam.split_model(
            xception,
            loading.IMAGENET_XCEPTION_GRADCAM_LAYER,
            "predictions",
            preprocess=loading.imagenet_xception_inputs,
        )
        labels = None
    layers = filters.choose_layers(f.layers, architecture, probed)
    sections.draw_filters(
        probed,
        layers,
        folder / "filters",
        architecture,
        f.num_filters,
        f.steps,
        f.learning_rate,
        scale,
        f.crop,
        f.margin,
        seed=cfg.trainer.seed,
    )

    g = vis.gradcam
    explained = sections.explain_classifier(
        cam,
        test.images,
        test.require("masks"),
        labels,
        class_names,
        test.stems,
        folder / "gradcam",
        vis.num_images,
        g.localization_images,
        g.alpha,
        g.other_class,
    )
    seg = sections.explain_segmentation(
        segmenter,
        val.images,
        val.require("masks"),
        val.stems,
        folder / "segmentation",
        vis.num_images,
        vis.segmentation.worst,
    )
    seg.update(
        evidence.explain_segmentation_failures(
            segmenter,
            val.images,
            val.require("masks"),
            val.stems,
            folder / "segmentation",
            vis.segmentation.worst,
            vis.segmentation.pet_size_edges,
        )
    )
    area = explained["pet_area"]
    explained["heat_ratio"] = explained["heat_on_pet"] / area if area > 0 else float("nan")
    if imagenet is not None:
        return {"model": architecture, "gradcam": explained, "segmentation": seg}
    where = evidence.explain_where(
        classifier,
        architectures.lookup(Task.classification, architecture).block_outputs,
        architectures.last_conv_layer(architecture),
        test.images,
        test.require("masks"),
        np.asarray(test.require("labels")),
        test.stems,
        folder,
        g.localization_images,
        vis.localization,
        vis.faithfulness,
        vis.sanity,
        g.alpha,
        cfg.trainer.seed,
    )
    return {"model": architecture, **where, "gradcam": explained, "segmentation": seg}


def without_nan(tree):
    """JSON has no NaN: an undefined value (no image to average over) is written as null."""
    if isinstance(tree, dict):
        return {k: without_nan(v) for k, v in tree.items()}
    if isinstance(tree, float) and not math.isfinite(tree):
        return None
    return tree


# --------------------------------------------------------------------------- MLflow links


def read_model_run(task: TaskConfig) -> dict | None:
    """``reports/<task>/mlflow_run.json`` (written by the training stage), or None with a warning."""
    path = task.reports / "mlflow_run.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(info, dict) or not info.get("run_id"):
            raise ValueError("no run_id")
    except (OSError, ValueError) as exc:
        log.warning(
            "%s: cannot tell which MLflow run trained the %s model (%s); the pictures will not be "
            "linked to it",
            path,
            task.task,
            exc,
        )
        return None
    return info


def explained_tags(cfg: Config, model_runs: dict[Task, dict | None]) -> dict[str, str]:
    tags = {
        "explains.classification.model": cfg.classification.model.name,
        "explains.segmentation.model": cfg.segmentation.model.name,
        "visualize.model": cfg.visualize.model,
    }
    for task, info in model_runs.items():
        if info:
            tags[f"explains.{task}.run_id"] = str(info["run_id"])
            tags[f"explains.{task}.experiment_id"] = str(info.get("experiment_id", ""))
    return tags


def run_url(uri: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI page of one run (the local UI's address for a store without a server)."""
    base = tracking.ui_url(uri, experiment_id).split("/#/", 1)[0]
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def link_model_runs(run: tracking.Run, model_runs: dict[Task, dict | None]) -> None:
    """Tag each training run with this run's id and address, and describe this run with links
    to them: one click between a model and the pictures that explain it. A run in another store
    (a teammate's, via ``dvc pull``) or no longer there is warned about and skipped."""
    import mlflow

    here = run_url(run.uri, run.experiment_id, run.run_id)
    notes = []
    client = mlflow.MlflowClient(run.uri)
    for task, info in model_runs.items():
        if not info:
            continue
        run_id, experiment_id = str(info["run_id"]), str(info.get("experiment_id", ""))
        if info.get("tracking_uri") and info["tracking_uri"] != run.uri:
            log.warning(
                "the %s model's MLflow run %s is in another tracking store (%s), not %s; not linked",
                task,
                run_id,
                info["tracking_uri"],
                run.uri,
            )
            continue
        try:
            client.set_tag(run_id, "interpretation_run_id", run.run_id)
            client.set_tag(run_id, "interpretation_url", here)
        except Exception as exc:
            log.warning(
                "cannot tag the %s model's MLflow run %s in %s (%s); not linked",
                task,
                run_id,
                run.uri,
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )
            continue
        notes.append(f"- {task} model: [run {run_id}]({run_url(run.uri, experiment_id, run_id)})")
    if notes:
        run.set_tags(
            {
                "mlflow.note.content": "Pictures explaining these trained models:\n\n"
                + "\n".join(notes)
            }
        )


if __name__ == "__main__":
    stage.main(run_visualize, writes=["reports"])
