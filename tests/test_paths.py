"""Where the project is: a wrong PETVISION_ROOT is a configuration error a user can read."""

from __future__ import annotations

import pytest
from conftest import run_module

from petvision.core import paths
from petvision.core.errors import ConfigError


def test_a_petvision_root_that_is_not_a_project_is_a_config_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.ROOT_ENV, str(tmp_path))
    with pytest.raises(ConfigError, match=rf"PETVISION_ROOT={tmp_path} is not a petvision project"):
        paths.project_root()


def test_no_project_anywhere_is_a_config_error_saying_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv(paths.ROOT_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(paths, "_SOURCE_CHECKOUT", tmp_path / "not-a-checkout")
    with pytest.raises(ConfigError, match=rf"no petvision project found at or above {tmp_path}"):
        paths.project_root()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_stage_with_a_wrong_petvision_root_prints_one_line_and_exits_2(tmp_path):
    done = run_module("petvision.download", env={paths.ROOT_ENV: str(tmp_path)}, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert f"error: PETVISION_ROOT={tmp_path} is not a petvision project" in done.stderr
    assert "Traceback" not in done.stderr
