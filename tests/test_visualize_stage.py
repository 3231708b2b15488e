"""The visualize stage end to end, on tiny models saved where the training stages put theirs and a
tiny preprocessed dataset: outputs, metrics, the MLflow run and its links to the training runs."""

from __future__ import annotations

import csv
import json
import logging
import re

import mlflow
import pytest
from conftest import free_port, path_overrides, run_module, write_npy
from saved_models import save_untrained_models

from petvision import tracking
from petvision.config import architectures, task_config
from petvision.core import atomic
from petvision.core.errors import ConfigError, DownloadError
from petvision.core.tasks import Task
from petvision.data import npy_dataset
from petvision.visualize import output_dir, run_visualize, without_nan

BLOCKS = architectures.lookup(Task.classification, "mini_xception").block_outputs
CLASSIFIER_SIZE, SEGMENTATION_SIZE = 64, 32
PET_IN_THE_MIDDLE = {"pet_divisor": 2, "centred": True}  # the middle quarter of every image
TEST_IMAGES, VAL_IMAGES = 6, 4
TINY = [
    f"data.classification.image_size={CLASSIFIER_SIZE}",
    f"data.segmentation.image_size={SEGMENTATION_SIZE}",
    "visualize.num_images=3",
    "visualize.segmentation.worst=2",
    "visualize.gradcam.other_class=true",
    "visualize.filters.num_filters=2",
    "visualize.filters.steps=2",
    "visualize.filters.crop=4",
]


@pytest.fixture
def trained(make_config):
    """The pipeline's inputs to visualize: models, arrays, and the training runs' mlflow_run.json
    (the classifier's run exists in the store; the segmentation model's, as after a `dvc pull` of
    a teammate's outputs, does not)."""
    cfg = make_config(*TINY)
    npy = cfg.paths.resolve("npy")
    write_npy(
        npy, "classification", CLASSIFIER_SIZE, {"test": TEST_IMAGES}, seed=0, **PET_IN_THE_MIDDLE
    )
    write_npy(
        npy, "segmentation", SEGMENTATION_SIZE, {"val": VAL_IMAGES}, seed=1, **PET_IN_THE_MIDDLE
    )
    assert (cfg.classification.model.name, cfg.segmentation.model.name) == ("mini_xception", "book")
    save_untrained_models(cfg, SEGMENTATION_SIZE, classifier_size=CLASSIFIER_SIZE)

    with tracking.Run(cfg, "train_xception", task=task_config(cfg, Task.classification)) as run:
        pass
    atomic.write_json(
        task_config(cfg, Task.classification).reports / "mlflow_run.json",
        {"run_id": run.run_id, "experiment_id": run.experiment_id, "tracking_uri": run.uri},
    )
    atomic.write_json(
        task_config(cfg, Task.segmentation).reports / "mlflow_run.json",
        {"run_id": "0" * 32, "experiment_id": "7", "tracking_uri": run.uri},
    )
    return cfg, run


def test_visualize_writes_every_picture_and_the_metrics_and_links_the_mlflow_runs(trained, caplog):
    cfg, training_run = trained
    with caplog.at_level(logging.WARNING):
        metrics = run_visualize(cfg)

    out = output_dir(cfg)
    activations = sorted(p.name for p in (out / "activations").iterdir())
    classifier_pictures = [n for n in activations if n.startswith("classifier_")]
    assert classifier_pictures[0] == "classifier_00_input.png"
    assert (
        len(classifier_pictures) == 1 + 21
    )  # stem, 5 blocks x (2 separable convs, pool, residual)
    assert (
        "classifier_01_stem_conv.png" in activations
        and "classifier_21_block5_residual.png" in activations
    )
    assert [n for n in activations if n.startswith("segmentation_")][
        -1
    ] == "segmentation_06_down3_conv.png"
    assert sorted(p.name for p in (out / "filters").iterdir()) == [
        "mini_xception_block2_sepconv1.jpg",
        "mini_xception_block4_sepconv1.jpg",
        "mini_xception_stem_conv.jpg",
    ]
    assert (out / "gradcam" / "gradcam.jpg").is_file()
    assert sorted(p.name for p in (out / "segmentation").iterdir()) == [
        "failure_modes.jpg",
        "iou_breakdown.png",
        "samples.jpg",
        "worst.jpg",
    ]
    assert sorted(p.name for p in (out / "layers").iterdir()) == [
        "localization_by_depth.png",
        "outline.png",
        "per_layer.jpg",
    ]
    assert [p.name for p in (out / "faithfulness").iterdir()] == ["deletion_insertion.png"]
    assert [p.name for p in (out / "sanity").iterdir()] == ["cascade.jpg"]
    by_layer = list(csv.DictReader((out / "localization_by_layer.csv").open()))
    assert [row["layer"] for row in by_layer] == list(BLOCKS)
    curves = list(csv.DictReader((out / "deletion_insertion.csv").open()))
    assert len(curves) == 1 + 16
    assert float(curves[0]["fraction"]) == 0 and float(curves[-1]["fraction"]) == 1
    assert {"default_deletion", "book_insertion", "random_deletion"} <= set(curves[0])
    cascade = list(csv.DictReader((out / "sanity_cascade.csv").open()))
    assert [row["randomized_down_to"] for row in cascade] == ["output", *reversed(BLOCKS)]
    assert not [
        p for p in out.parent.iterdir() if p.name.startswith(".")
    ]  # no temporary left behind
    page = (out / "report.html").read_text()
    links = re.findall(r'<img src="([^"]+)"', page)
    assert "activations/classifier_01_stem_conv.png" in links and "gradcam/gradcam.jpg" in links
    assert {
        "layers/per_layer.jpg",
        "layers/outline.png",
        "faithfulness/deletion_insertion.png",
        "sanity/cascade.jpg",
        "segmentation/failure_modes.jpg",
    } <= set(links)
    for heading in (
        "Where the classifier looks",
        "Localization of every block",
        "by distance to the outline of the pet",
        "Deletion and insertion",
        "Occlusion by the trimaps",
        "Sanity check",
        "Segmentation by pet size",
    ):
        assert heading in page
    assert all(
        (out / link).resolve().is_file() for link in links
    )  # valid once the folder is in place

    written = json.loads((out / "metrics.json").read_text())
    # An empty pet-size bucket's values are NaN, written as null.
    assert written == json.loads(json.dumps(without_nan(metrics)))
    g = written["gradcam"]
    assert g["images"] == TEST_IMAGES and g["layer"] == "block5_add"
    for key in ("heat_on_pet", "pointing_game"):
        assert g[key] is None or 0 <= g[key] <= 1
    assert g["pet_area"] == pytest.approx(0.25)
    # 64 px: blocks 1..5 are 30, 15, 8, 4, 2 cells; stride 8 is block 3's.
    loc = written["localization"]
    assert loc["method"] == "hirescam" and loc["layers"] == "block3_add"
    assert loc["images"] == TEST_IMAGES and loc["pet_area"] == pytest.approx(0.25)
    assert loc["per_layer_images"] == TEST_IMAGES  # visualize.localization.layer_images: 100
    # The pets are 32x32 squares: a 4 px band either side of the outline is 448 px on the pet
    # (32^2 - 24^2) and 576 off it (40^2 - 32^2).
    assert loc["outline"]["outline_band_ratio"] == pytest.approx(448 / 1024 / 0.25)
    assert sum(b["area"] for b in loc["outline"]["bands"].values()) == pytest.approx(1)
    assert list(written["layers"]) == list(BLOCKS)
    assert [row["map_size"] for row in written["layers"].values()] == [30, 15, 8, 4, 2]
    f = written["faithfulness"]
    assert set(f["deletion_auc"]) == set(f["insertion_auc"]) == {"default", "book", "random"}
    assert f["images"] == TEST_IMAGES and f["occlusion"]["images"] == TEST_IMAGES
    for key in ("nothing_greyed", "background_greyed", "pet_greyed", "pet_box_greyed"):
        assert 0 <= f["occlusion"][key] <= 1
    steps = [f"{i}_{name}" for i, name in enumerate(["output", *reversed(BLOCKS)], start=1)]
    assert list(written["sanity"]["rank_correlation"]["default"]) == steps
    seg = written["segmentation"]
    assert set(seg["iou_by_class"]) == {"pet", "background", "border"}
    assert list(seg["by_pet_size"]) == ["under_15pct", "15_to_30pct", "30pct_up"]
    assert seg["by_pet_size"]["15_to_30pct"]["images"] == VAL_IMAGES  # every pet covers a quarter
    s = written["segmentation"]
    assert s["images"] == VAL_IMAGES and 0 <= s["worst_pet_iou"] <= s["mean_pet_iou"] <= 1

    client = mlflow.MlflowClient(training_run.uri)
    explained = client.get_run(training_run.run_id).data.tags
    interpretation = client.get_run(explained["interpretation_run_id"])
    assert interpretation.info.status == "FINISHED"
    assert (
        client.get_experiment(interpretation.info.experiment_id).name
        == cfg.tracking.experiments.interpretation
    )
    assert interpretation.data.tags["explains.classification.run_id"] == training_run.run_id
    assert interpretation.info.run_id in explained["interpretation_url"]
    assert training_run.run_id in interpretation.data.tags["mlflow.note.content"]
    assert interpretation.data.metrics["gradcam.pet_area"] == pytest.approx(0.25)
    assert interpretation.data.metrics["localization.outline.outline_band_ratio"] == pytest.approx(
        1.75
    )
    logged = {
        a.path
        for folder in ("activations", "filters", "gradcam", "segmentation")
        for a in client.list_artifacts(interpretation.info.run_id, f"visualize/{folder}")
    }
    assert (
        "visualize/gradcam/gradcam.jpg" in logged and "visualize/segmentation/worst.jpg" in logged
    )
    logged |= {
        a.path
        for folder in ("layers", "faithfulness", "sanity")
        for a in client.list_artifacts(interpretation.info.run_id, f"visualize/{folder}")
    }
    assert {
        "visualize/layers/per_layer.jpg",
        "visualize/layers/outline.png",
        "visualize/faithfulness/deletion_insertion.png",
        "visualize/sanity/cascade.jpg",
        "visualize/segmentation/failure_modes.jpg",
    } <= logged
    assert interpretation.data.metrics["localization.pet_area"] == pytest.approx(0.25)
    assert "layers.block3_add.hirescam.heat_ratio" in interpretation.data.metrics
    assert "faithfulness.deletion_auc.random" in interpretation.data.metrics
    assert "sanity.rank_correlation.default.6_block1_add" in interpretation.data.metrics
    pages = {a.path for a in client.list_artifacts(interpretation.info.run_id, "visualize")}
    assert {
        "visualize/metrics.json",
        "visualize/report.html",
        "visualize/localization_by_layer.csv",
        "visualize/deletion_insertion.csv",
        "visualize/sanity_cascade.csv",
    } <= pages
    assert len([p for p in logged if p.startswith("visualize/activations/")]) == len(activations)
    # The segmentation model's run is not in this store: warned about, and the stage went on.
    assert any(
        "0" * 32 in r.getMessage() and "not linked" in r.getMessage() for r in caplog.records
    )


def test_a_bad_setting_fails_before_touching_the_previous_outputs(trained, make_config):
    cfg, _ = trained
    run_visualize(cfg)
    before = sorted(p.relative_to(output_dir(cfg)) for p in output_dir(cfg).rglob("*"))
    with pytest.raises(ConfigError, match=r"visualize.activations.image_index=99"):
        run_visualize(make_config(*TINY, "visualize.activations.image_index=99"))
    with pytest.raises(ConfigError, match=r"visualize.filters.layers.mini_xception.*'conv3'"):
        run_visualize(make_config(*TINY, "visualize.filters.layers.mini_xception=[conv3]"))
    assert sorted(p.relative_to(output_dir(cfg)) for p in output_dir(cfg).rglob("*")) == before


@pytest.mark.timeout(60)
def test_imagenet_xception_without_the_internet_fails_at_once_with_a_clear_message(
    make_config, tmp_path, monkeypatch
):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    cfg = make_config(
        *TINY,
        "visualize.model=imagenet_xception",
        f"visualize.imagenet.weights_url=http://127.0.0.1:{free_port()}/xception.h5",
    )
    with pytest.raises(
        DownloadError,
        match=r"visualize.model=imagenet_xception needs the ImageNet weights.*"
        r"no internet access.*visualize.model=trained",
    ):
        run_visualize(cfg)
    assert not output_dir(cfg).exists()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_cli_offline_imagenet_option_prints_one_line_and_exits_2(tmp_path):
    result = run_module(
        "petvision.visualize",
        *path_overrides(tmp_path),
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        "visualize.model=imagenet_xception",
        f"visualize.imagenet.weights_url=http://127.0.0.1:{free_port()}/x.h5",
        "visualize.imagenet.class_index_url=http://127.0.0.1:9/index.json",
        env={"KERAS_HOME": str(tmp_path / "keras")},
        timeout=170,
        hydra_dir=tmp_path / "hydra",
    )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert (
        len(errors) == 1
        and "visualize.model=imagenet_xception" in errors[0]
        and "internet" in errors[0]
    )
    assert "Traceback" not in result.stderr


def test_the_imagenet_xception_option_draws_the_books_views(trained, tmp_path):
    """The book's ImageNet Xception path, with the real architecture (random weights: the real
    ones need the internet): filters of block3_sepconv1 at filters.image_size, Grad-CAM at
    block14_sepconv2_act on 299x299 inputs in [-1, 1], named by the top ImageNet class."""
    import keras

    from petvision.interpret.pipeline import draw
    from petvision.models import loading

    cfg, _ = trained
    cfg.visualize.model = "imagenet_xception"
    cfg.visualize.filters.image_size = 96
    cfg.visualize.gradcam.localization_images = 2
    cfg.visualize.num_images = 2
    xception = keras.applications.Xception(weights=None)
    names = [f"class{i}" for i in range(1000)]
    classifier = loading.load_trained(
        task_config(cfg, Task.classification).model_file, "train_xception"
    )
    segmenter = loading.load_trained(
        task_config(cfg, Task.segmentation).model_file, "train_segmentation"
    )
    npy = cfg.paths.resolve("npy")
    test = npy_dataset.load_split(npy, "classification", "test")
    val = npy_dataset.load_split(npy, "segmentation", "val")

    metrics = draw.everything(
        cfg, classifier, segmenter, (xception, names), test, val, tmp_path / "out"
    )
    assert metrics["model"] == "imagenet_xception"
    assert (
        metrics["gradcam"]["layer"] == "block14_sepconv2_act" and metrics["gradcam"]["images"] == 2
    )
    assert "accuracy" not in metrics["gradcam"]  # ImageNet classes are not cat/dog labels
    assert [p.name for p in (tmp_path / "out" / "filters").iterdir()] == [
        "imagenet_xception_block3_sepconv1.jpg"
    ]
    assert (tmp_path / "out" / "gradcam" / "gradcam.jpg").is_file()
    # The activations stay those of the pipeline's own models.
    assert (tmp_path / "out" / "activations" / "classifier_01_stem_conv.png").is_file()
