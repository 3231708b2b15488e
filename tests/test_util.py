"""The generic helpers: each behaviour that its callers rely on."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

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


# A parent that maps a slow function over 2 worker processes; each worker writes its pid and
# its parent's pid into the folder given, then sleeps far longer than the test waits.
_SLOW_PARENT = """
import os, sys, time
from pathlib import Path
from petvision.util.parallel import process_map

def slow(x):
    Path(sys.argv[1], str(os.getpid())).write_text(str(os.getppid()))
    time.sleep(120)
    return x

if __name__ == "__main__":
    with process_map(2) as pmap:
        list(pmap(slow, range(4)))
"""


def _alive(pid: int) -> bool:
    """Running, not a zombie: an orphan that died waits as a zombie until init reaps it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: the signal-0 probe (true for a zombie too)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.mark.timeout(90)
def test_workers_die_when_their_parent_is_sigkilled(tmp_path):
    script = tmp_path / "slow_parent.py"
    script.write_text(_SLOW_PARENT)
    pids_dir = tmp_path / "pids"
    pids_dir.mkdir()
    parent = subprocess.Popen([sys.executable, str(script), str(pids_dir)])
    workers: list[int] = []
    try:
        assert _wait_for(lambda: len(list(pids_dir.iterdir())) == 2, 60), "no 2 workers started"
        workers = [int(p.name) for p in pids_dir.iterdir()]
        # They are the parent's own children, and running.
        assert {int(p.read_text()) for p in pids_dir.iterdir()} == {parent.pid}
        assert all(_alive(pid) for pid in workers)

        parent.kill()
        parent.wait(10)
        assert _wait_for(lambda: not any(_alive(pid) for pid in workers), 5), [
            pid for pid in workers if _alive(pid)
        ]
    finally:
        parent.kill()
        parent.wait(10)
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _run_and_wait(code: str) -> int:
    done = subprocess.run([sys.executable, "-c", code], timeout=30, check=False)
    return done.returncode


def test_a_worker_whose_parent_is_already_gone_ends_itself():
    # The race: the parent died before the worker's initializer ran, so the kernel has no parent
    # death left to signal. A pid that is not our parent's stands for the parent we started from.
    code = "import os, time; from petvision.util import parallel\n"
    code += "parallel._die_with_parent(os.getppid() + 1); time.sleep(20)"
    assert _run_and_wait(code) == -signal.SIGTERM


def test_the_polling_fallback_ends_a_worker_whose_parent_changed():
    # Off Linux a thread polls the parent's pid; it ends the process once it is not the one given.
    code = "import os, time; from petvision.util import parallel\n"
    code += "parallel._watch_parent(os.getppid() + 1, interval=0.05); time.sleep(20)"
    assert _run_and_wait(code) == -signal.SIGTERM
