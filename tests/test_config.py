"""One configuration path: conf/ is the source, params.yaml its composition, the schema its guard."""

import pytest
import yaml
from conftest import ROOT

from petvision import config
from petvision.core.errors import ConfigError


def test_committed_params_yaml_is_the_composition_of_conf(tmp_path):
    """params.yaml must say what conf/ says, as DVC's own composition writes it (make params)."""
    from dvc.utils.hydra import compose_and_dump

    fresh = tmp_path / "params.yaml"
    compose_and_dump(fresh, str(ROOT / "conf"), None, "config", str(ROOT), [])
    assert (ROOT / "params.yaml").read_text() == fresh.read_text(), (
        "params.yaml is stale: run `make params`"
    )


@pytest.mark.parametrize("preset", ["quick", "paper"])
def test_every_experiment_preset_composes_and_validates(preset):
    cfg = config.load(config.compose([f"experiment={preset}"]))
    assert cfg.preset == preset


def test_paper_preset_restates_the_books_settings():
    cfg = config.load(config.compose(["experiment=paper"]))
    assert cfg.data.source == "oxford_pets"
    assert (cfg.data.segmentation.image_size, cfg.data.segmentation.val_count) == (200, 1000)
    assert (
        cfg.data.classification.image_size,
        cfg.data.classification.train_count,
        cfg.data.classification.val_count,
        cfg.data.classification.test_count,
    ) == (180, 2000, 1000, 2000)
    for train in (cfg.segmentation.train, cfg.classification.train):
        assert (train.optimizer, train.batch_size, train.epochs) == ("rmsprop", 32, 100)
    assert (
        cfg.segmentation.model.name == "book" and cfg.classification.model.name == "mini_xception"
    )


def test_group_overrides_select_other_architectures():
    cfg = config.load(
        config.compose(["segmentation/model=unet", "classification/model=simple_convnet"])
    )
    assert cfg.segmentation.model.name == "unet"
    assert cfg.classification.model.name == "simple_convnet"


@pytest.mark.parametrize(
    "overrides, named",
    [
        (["+data.colour=red"], "data.colour"),
        (["+oops=1"], "oops"),
        (["trainer.seed=abc"], "trainer.seed"),
        (["trainer.xla=maybe"], "trainer.xla"),
        (["data.segmentation.image_size=100"], "data.segmentation.image_size=100"),
        (["data.segmentation.val_count=3000"], "data.segmentation.val_count=3000"),
        (["data.classification.train_count=2500"], "data.classification.train_count=2500"),
        (["segmentation.train.epochs=0"], "segmentation.train.epochs=0"),
        (["classification.train.epochs=-3"], "classification.train.epochs=-3"),
        (["data.source=kaggle"], "data.source='kaggle'"),
        (["trainer.precision=fp8"], "trainer.precision='fp8'"),
        (
            ["trainer.device=cpu", "trainer.precision=mixed_float16"],
            "trainer.precision='mixed_float16'",
        ),
        (["segmentation.train.learning_rate=0"], "segmentation.train.learning_rate=0"),
    ],
)
def test_bad_values_fail_with_the_key_and_value_named(overrides, named):
    with pytest.raises(ConfigError) as err:
        config.load(config.compose(overrides))
    assert named in str(err.value)


def test_missing_value_is_named(tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    del raw["trainer"]["seed"]
    with pytest.raises(ConfigError, match=r"trainer\.seed"):
        config.load(raw)


def test_params_yaml_loads_as_the_same_config_as_conf():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert config.load(raw) == config.load(config.compose([]))


def test_paths_resolve_against_the_project_root_not_the_cwd(tmp_path, monkeypatch):
    cfg = config.load(config.compose([]))
    monkeypatch.chdir(tmp_path)
    assert cfg.paths.resolve("raw") == ROOT / "data/raw/pets"
    monkeypatch.chdir(ROOT / "src")
    assert cfg.paths.resolve("raw") == ROOT / "data/raw/pets"


def test_no_hydra_interpolations_in_what_dvc_composes():
    for source in (ROOT / "conf").rglob("*.yaml"):
        assert "${hydra:" not in source.read_text(), source
