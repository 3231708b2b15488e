"""Stage visualize: what the convnets learned (the book's chapter 9.4).

    python -m petvision.visualize [overrides]     e.g. visualize.gradcam.other_class=true

Reads the trained models (``models/*.keras``) and the preprocessed test/validation arrays, never
MLflow, and writes under ``<paths.reports>/visualize/``, all at once:

    activations/   every channel of every convolution and pooling layer of the classifier, and of
                   the segmentation model's encoder, for one image
    filters/       gradient-ascent patterns of the first filters of chosen classifier layers
    gradcam/       Grad-CAM heatmaps of the classifier's last convolutional block on test images
    layers/        every block's maps, and the default localization method's
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

import logging
import math
from datetime import datetime
from pathlib import Path

from petvision import tracking
from petvision.cli import stage
from petvision.config import Config, Task, task_config
from petvision.core import atomic
from petvision.data import npy_dataset
from petvision.interpret.pipeline import draw, links
from petvision.models import imagenet, loading, xla
from petvision.render import html_report, report_tables
from petvision.util.nested import flatten, numbers

log = logging.getLogger("petvision.visualize")  # not __name__: that is "__main__" under python -m


def output_dir(cfg: Config) -> Path:
    return cfg.paths.resolve("reports") / "visualize"


def run_visualize(cfg: Config) -> dict:
    vis = cfg.visualize
    # On JAX: the weight initializers run as the models load, and the training stages compiled
    # them for the same shapes; a rerun of this stage finds all of its programs there.
    xla.use_compile_cache(cfg.paths.resolve("compile_cache") if cfg.trainer.compile_cache else None)
    imagenet_xception = None
    if vis.model == "imagenet_xception":
        # First: without the internet this fails in seconds, before anything else is loaded.
        imagenet_xception = imagenet.load_xception(
            vis.imagenet.weights_url, vis.imagenet.class_index_url, vis.imagenet.timeout_s
        )
    trained = (task_config(cfg, Task.classification), task_config(cfg, Task.segmentation))
    classifier, segmenter = (loading.load_trained(t.model_file, t.stage) for t in trained)
    npy = cfg.paths.resolve("npy")
    test = npy_dataset.load_split(npy, Task.classification, "test")
    val = npy_dataset.load_split(npy, Task.segmentation, "val")
    draw.check_inputs(cfg, classifier, segmenter, test, val)
    model_runs = {t.task: links.read_model_run(t) for t in trained}

    shown = vis.model if imagenet_xception else cfg.classification.model.name
    run_name = f"visualize {shown} {cfg.preset} {datetime.now():%m-%d %H:%M}"
    tags = links.explained_tags(cfg, model_runs)
    with tracking.Run(
        cfg,
        "visualize",
        experiment=cfg.tracking.experiments.interpretation,
        run_name=run_name,
        tags={tracking.TASK_TAG: "interpretation", **tags},
    ) as run:
        out = output_dir(cfg)
        with atomic.atomic_dir(out) as tmp:
            metrics = draw.everything(cfg, classifier, segmenter, imagenet_xception, test, val, tmp)
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
        links.log_outputs(run, out)
        links.link_model_runs(run, model_runs)
    log.info("visualize: pictures and metrics in %s", out)
    return metrics


def without_nan(tree):
    """JSON has no NaN: an undefined value (no image to average over) is written as null."""
    if isinstance(tree, dict):
        return {k: without_nan(v) for k, v in tree.items()}
    if isinstance(tree, float) and not math.isfinite(tree):
        return None
    return tree


if __name__ == "__main__":
    stage.main(run_visualize, writes=["reports"])
