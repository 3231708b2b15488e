"""The Model Registry: each trained model a new version; 'champion' moves only to a version that
beats it on the same validation data. Against the local SQLite store and a real `mlflow server`."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from project_copy import tiny_overrides

from petvision.config import task_config
from petvision.core.tasks import Task

NAME = "petvision-classifier"


@pytest.fixture(params=["sqlite", pytest.param("server", marks=pytest.mark.slow)])
def store_cfg(request, make_config, tmp_path):
    if request.param == "sqlite":
        return make_config(*tiny_overrides())
    uri, _ = request.getfixturevalue("mlflow_server")
    return make_config(*tiny_overrides(), f"tracking.uri={uri}")


@pytest.fixture(scope="module")
def classifier():
    from petvision import config
    from petvision.models.classification import build_classifier

    cfg = config.load(config.compose(tiny_overrides()))
    return build_classifier(cfg.classification.model, cfg.data.classification.image_size)


def _train(cfg, model, accuracy: float, digest: str, scale: float = 1.0):
    """What a training session's finish does: log the model in a run, then the registry hook."""
    from petvision import tracking
    from petvision.tracking import registry

    model.set_weights([w * scale for w in model.get_weights()])
    example = np.zeros((1, *model.inputs[0].shape[1:]), np.uint8)
    with tracking.Run(cfg, "train_xception", task=task_config(cfg, Task.classification)) as run:
        uri = run.log_keras_model(model, example)
        decision = registry.register_trained_model(
            cfg.tracking,
            task_config(cfg, Task.classification),
            run,
            uri,
            {"val": {"accuracy": accuracy}},
            {"val": digest},
        )
    assert not run.lost, run.lost
    return run.run_id, decision


def test_champion_moves_only_to_a_better_model_on_the_same_validation_data(
    store_cfg, classifier, monkeypatch, tmp_path
):
    import mlflow

    from petvision import inference, tracking

    monkeypatch.setenv("DVC_EXP_NAME", "lucky-dingo")
    client = mlflow.MlflowClient(tracking.tracking_uri(store_cfg.tracking))
    weights = classifier.get_weights()

    # first version: champion, there is nothing to beat
    run1, first = _train(store_cfg, classifier, 0.70, "digest-a")
    assert first.promoted and first.version == "1" and first.previous_champion is None
    assert "no champion yet" in first.reason

    # not better (a tie): registered, the alias stays
    run2, tie = _train(store_cfg, classifier, 0.70, "digest-a")
    assert not tie.promoted and tie.version == "2" and "does not beat" in tie.reason

    # better on the same data: promoted
    classifier.set_weights(weights)
    run3, better = _train(store_cfg, classifier, 0.80, "digest-a", scale=1.5)
    assert (
        better.promoted
        and better.previous_champion == "1"
        and "beats champion version 1" in better.reason
    )

    # far better, but on other validation data: no comparison, no move
    run4, other = _train(store_cfg, classifier, 0.99, "digest-b", scale=0.5)
    assert not other.promoted and "not compared" in other.reason and "digest-b" in other.reason

    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "3"
    versions = {str(v.version): v for v in client.search_model_versions(f"name='{NAME}'")}
    assert set(versions) == {"1", "2", "3", "4"}
    for version, run_id, decision in (
        ("1", run1, "promoted"),
        ("2", run2, "kept"),
        ("3", run3, "promoted"),
        ("4", run4, "kept"),
    ):
        v = client.get_model_version(NAME, version)
        assert v.run_id == run_id
        assert v.tags["run_id"] == run_id and v.tags["dvc.exp_name"] == "lucky-dingo"
        assert (
            v.tags["champion.decision"] == decision and v.tags["champion.reason"] in v.description
        )
        assert v.tags["metric.name"] == "val_accuracy"
    assert versions["4"].tags["data_digest.val"] == "digest-b"

    # predict takes the champion by its alias: the third model's weights
    classifier.set_weights([w * 1.5 for w in weights])
    x = (
        np.random.default_rng(0)
        .integers(0, 256, (2, *classifier.inputs[0].shape[1:]))
        .astype("float32")
    )
    champion = inference.load_model(
        task_config(store_cfg, Task.classification), f"models:/{NAME}@champion", store_cfg.tracking
    )
    np.testing.assert_allclose(champion(x), classifier.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    assert champion.interpolation == store_cfg.data.classification.interpolation

    # tracking.register=false: logged, not registered
    off = dataclasses.replace(
        store_cfg, tracking=dataclasses.replace(store_cfg.tracking, register=False)
    )
    _, none = _train(off, classifier, 0.95, "digest-a")
    assert none is None and len(client.search_model_versions(f"name='{NAME}'")) == 4


def test_decide_explains_each_case():
    from types import SimpleNamespace

    from petvision.tracking.registry import Candidate, decide

    new = Candidate("segmentation", "models:/m-1", "r", "val_pet_iou", 0.5, "d", "")

    def champ(**tags):
        return SimpleNamespace(
            version="7", tags={"data_digest.val": "d", "metric.name": "val_pet_iou", **tags}
        )

    assert decide(new, None)[0]
    assert decide(new, champ(**{"metric.value": "0.4"})) == (
        True,
        "val_pet_iou 0.5 beats champion version 7's 0.4 on the same validation data",
    )
    assert not decide(new, champ(**{"metric.value": "0.5"}))[0]
    assert not decide(new, champ(**{"metric.value": "0.6"}))[0]
    assert not decide(new, champ(**{"metric.value": "0.1", "data_digest.val": "e"}))[0]
    assert not decide(
        dataclasses.replace(new, value=float("nan")), champ(**{"metric.value": "0.1"})
    )[0]
    assert decide(new, champ(**{"metric.value": "nan"}))[
        0
    ]  # a NaN champion is beaten by any number
