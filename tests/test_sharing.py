"""Sharing cached artifacts: `dvc push --run-cache` from one checkout, `dvc pull --run-cache` into a
fresh clone, and the clone needs no rerun and holds working models. Once with the default remote
(a folder beside the checkout), once with an S3 remote (moto's S3 server on 127.0.0.1)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import free_port
from project_copy import VENV_BIN, copy_project, dvc, git, ran_stages

BUCKET = "petvision-dvc"
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 with an empty bucket; its URL."""
    import boto3
    import requests

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path_factory.mktemp("moto") / "server.log").open("w")
    server = subprocess.Popen(
        [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(url, timeout=1)
                break
            except requests.ConnectionError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"moto_server did not start on {url}; see {log.name}"
                    ) from None
                time.sleep(0.2)
        boto3.client("s3", endpoint_url=url, **aws_arguments()).create_bucket(Bucket=BUCKET)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def aws_arguments() -> dict[str, str]:
    return {
        "aws_access_key_id": FAKE_AWS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": FAKE_AWS["AWS_SECRET_ACCESS_KEY"],
        "region_name": FAKE_AWS["AWS_DEFAULT_REGION"],
    }


def check_models_load_and_predict(project: Path) -> None:
    import keras

    from petvision.data import npy_dataset

    npy = project / "data" / "npy"
    for model_file, task, split in (
        ("classifier.keras", "classification", "test"),
        ("segmentation.keras", "segmentation", "val"),
    ):
        model = keras.saving.load_model(project / "models" / model_file, safe_mode=True)
        images = np.asarray(npy_dataset.load_split(npy, task, split).images[:4])
        predicted = np.asarray(
            keras.ops.convert_to_numpy(model.predict(images, verbose=0)), dtype=np.float32
        )
        assert predicted.shape[0] == len(images) and np.isfinite(predicted).all(), (
            model_file,
            predicted.shape,
        )
        if task == "classification":
            assert predicted.shape[1:] == (1,) and ((predicted >= 0) & (predicted <= 1)).all()
        else:
            assert predicted.shape[1:3] == images.shape[1:3]


@pytest.mark.slow
@pytest.mark.parametrize("remote", ["default", "s3"])
def test_pushed_results_pulled_into_a_fresh_clone_need_no_rerun(
    repro_project, tmp_path, remote, request
):
    # The team's checkout; the default remote is ../petvision-dvc-storage beside it.
    project = copy_project(repro_project, tmp_path / "project")
    extra_env = {}
    if remote == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        extra_env = FAKE_AWS
        dvc(project, "remote", "add", "--default", "team", f"s3://{BUCKET}/{tmp_path.name}")
        dvc(project, "remote", "modify", "team", "endpointurl", endpoint)
        git(project, "commit", "--quiet", "-am", "S3 remote for the team")

    dvc(project, "push", "--run-cache", extra_env=extra_env)
    if remote == "default":
        assert any((tmp_path / "petvision-dvc-storage" / "files" / "md5").iterdir())
    else:
        import boto3

        listed = boto3.client("s3", endpoint_url=endpoint, **aws_arguments()).list_objects_v2(
            Bucket=BUCKET, Prefix=f"{tmp_path.name}/"
        )
        keys = [o["Key"] for o in listed.get("Contents", [])]
        assert any("/runs/" in k for k in keys) and any("/files/md5/" in k for k in keys), keys[:10]

    # A teammate's fresh clone, beside the checkout so the default remote's relative path holds.
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", str(project), str(clone))
    assert not (clone / "models").exists()
    dvc(clone, "pull", "--run-cache", extra_env=extra_env)
    done = dvc(clone, "repro", extra_env=extra_env)
    assert ran_stages(done.stdout) == [], done.stdout
    assert "up to date" in dvc(clone, "status").stdout
    check_models_load_and_predict(clone)

    # Without dvc.lock, the pulled run cache restores a stage instead of running it, for stages whose
    # outputs are all cached: download here. (DVC pushes no objects for `cache: false` outputs, so
    # the other stages, whose metrics are such outputs, would rerun; see docs/experiments.md,
    # "Sharing cached artifacts".)
    (clone / "dvc.lock").unlink()
    done = dvc(clone, "repro", "download", extra_env=extra_env)
    assert ran_stages(done.stdout) == [], done.stdout
    assert "Stage 'download' is cached - skipping run" in done.stdout
