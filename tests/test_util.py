"""The generic helpers: each behaviour that its callers rely on."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures.process import BrokenProcessPool

import pytest

from petvision.util import hashing, nested, parallel, retry


def test_file_digest_streams_the_same_digest_as_hashlib(tmp_path):
    data = os.urandom(3 * hashing.CHUNK_BYTES + 17)
    (tmp_path / "f").write_bytes(data)
    assert hashing.file_digest(tmp_path / "f") == hashlib.sha256(data).hexdigest()
    assert hashing.file_digest(tmp_path / "f", "md5") == hashlib.md5(data).hexdigest()
    running = hashlib.sha256(b"head")
    hashing.update_with_file(running, tmp_path / "f")
    assert running.hexdigest() == hashlib.sha256(b"head" + data).hexdigest()


def test_json_digest_ignores_key_order():
    assert hashing.json_digest({"a": 1, "b": [2]}) == hashing.json_digest({"b": [2], "a": 1})
    assert hashing.json_digest({"a": 1}) != hashing.json_digest({"a": 2})


def test_flatten_gives_mlflow_style_keys():
    flat = nested.flatten({"a": {"b": 1, "c": [1, 2]}, "d": [{"e": 3}]}, index_lists=True)
    assert flat == {"a.b": 1, "a.c": [1, 2], "d[0].e": 3}
    assert nested.flatten({"d": [{"e": 3}]}) == {"d": [{"e": 3}]}


def test_numbers_keeps_numbers_only_as_floats():
    flat = nested.flatten({"a": {"n": 2, "x": 0.5, "ok": True, "s": "x", "l": [1]}}, "m.")
    assert nested.numbers(flat) == {"m.a.n": 2.0, "m.a.x": 0.5}


def _flaky(failures: list[Exception], result: str = "done"):
    def call() -> str:
        if failures:
            raise failures.pop(0)
        return result

    return call


def test_with_retries_backs_off_and_gives_up_after_its_retries(monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(retry.time, "sleep", waits.append)
    call = _flaky([OSError("1"), OSError("2")])
    assert retry.with_retries(call, retryable=lambda e: True, retries=2, backoff_s=0.5) == "done"
    assert waits == [0.5, 1.0]
    with pytest.raises(OSError, match="3"):
        retry.with_retries(
            _flaky([OSError("1"), OSError("2"), OSError("3")]),
            retryable=lambda e: True,
            retries=2,
            backoff_s=0.5,
        )
    with pytest.raises(KeyError):  # not retryable: raised at once
        retry.with_retries(
            _flaky([KeyError("k")]),
            retryable=lambda e: isinstance(e, OSError),
            retries=5,
            backoff_s=1,
        )


def test_with_retries_starts_counting_again_after_progress(monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(retry.time, "sleep", waits.append)
    call = _flaky([OSError(str(i)) for i in range(5)])
    # Every failure made progress: five failures never exhaust one retry.
    assert (
        retry.with_retries(
            call, retryable=lambda e: True, retries=1, backoff_s=1, progressed=lambda: True
        )
        == "done"
    )
    assert waits == [1, 1, 1, 1, 1]


def _square(x: int) -> int:
    return x * x


def _die(x: int) -> int:
    os._exit(3)


@pytest.mark.parametrize("workers", [1, 2])
def test_process_map_keeps_input_order(workers):
    with parallel.process_map(workers) as pmap:
        assert list(pmap(_square, range(20), chunksize=3)) == [x * x for x in range(20)]


@pytest.mark.timeout(60)
def test_a_worker_that_dies_raises_instead_of_hanging():
    with pytest.raises(BrokenProcessPool), parallel.process_map(2) as pmap:
        list(pmap(_die, range(4)))
