"""runtime.setup on this machine (CPU only): precision, rejected combinations, strategies, seeds,
and on the JAX backend the persistent compilation cache and trainer.xla_flags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import pytest

from petvision.config import TrainerConfig
from petvision.core.errors import ConfigError
from petvision.training import runtime

HAS_GPU = bool(runtime._gpus())
CPU_HAS_BF16 = (
    any(flag in Path("/proc/cpuinfo").read_text() for flag in ("avx512_bf16", "amx_bf16"))
    if Path("/proc/cpuinfo").exists()
    else False
)


def trainer(**overrides) -> TrainerConfig:
    values = dict(
        device="auto",
        precision="auto",
        xla=False,
        strategy="default",
        seed=7,
        deterministic=False,
        resume=False,
    )
    return TrainerConfig(**{**values, **overrides})


@pytest.fixture(autouse=True)
def restore_policy():
    yield
    keras.config.set_dtype_policy("float32")


@pytest.mark.skipif(
    not CPU_HAS_BF16 or HAS_GPU, reason="needs a CPU with native bfloat16 and no GPU"
)
def test_auto_precision_is_bfloat16_on_a_cpu_that_has_it():
    rt = runtime.setup(trainer())
    assert rt.device == "cpu" and rt.bf16_native
    assert rt.precision == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "mixed_bfloat16"


def test_auto_precision_is_float32_without_native_bfloat16(monkeypatch):
    monkeypatch.setattr(runtime, "bf16_native", lambda device="auto": False)
    rt = runtime.setup(trainer(device="cpu"))
    assert rt.precision == "float32"
    assert keras.config.dtype_policy().name == "float32"


def test_explicit_precision_is_kept(monkeypatch):
    monkeypatch.setattr(runtime, "bf16_native", lambda device="auto": False)
    rt = runtime.setup(trainer(device="cpu", precision="mixed_bfloat16"))
    assert rt.precision == "mixed_bfloat16"
    assert runtime.setup(trainer(device="cpu", precision="float32")).precision == "float32"


@pytest.mark.skipif(HAS_GPU, reason="checks the CPU-only case")
def test_float16_on_a_cpu_is_rejected_naming_the_keys():
    # device=cpu with mixed_float16 is already refused by config validation; auto on a
    # machine without a GPU lands on the CPU too.
    with pytest.raises(
        ConfigError, match=r"trainer\.precision='mixed_float16'.*trainer\.device='auto'"
    ):
        runtime.setup(trainer(precision="mixed_float16"))


@pytest.mark.skipif(HAS_GPU, reason="checks the CPU-only case")
def test_gpu_requested_without_one_is_rejected():
    with pytest.raises(ConfigError, match=r"trainer\.device='gpu'"):
        runtime.setup(trainer(device="gpu"))
    assert runtime.setup(trainer(device="auto")).device == "cpu"


def test_multi_worker_was_removed_and_the_error_says_what_to_use(make_config):
    """trainer.strategy=multi_worker patched Keras internals and was removed (docs/architecture.md):
    the configuration refuses it at start, naming the replacements."""
    with pytest.raises(ConfigError) as err:
        make_config("trainer.strategy=multi_worker")
    message = str(err.value)
    assert message.startswith("trainer.strategy='multi_worker': must be one of default, mirrored")
    assert "was removed" in message
    assert "trainer.strategy=mirrored" in message and "Optuna study" in message
    # A TrainerConfig built in code, past the schema: refused by the runtime too.
    with pytest.raises(ConfigError, match=r"trainer\.strategy='multi_worker'"):
        runtime.setup(trainer(strategy="multi_worker"))


def test_describe_gives_string_tags():
    tags = runtime.setup(trainer(device="cpu")).describe()
    assert tags["runtime.device"] == "cpu" and tags["runtime.strategy"] == "default"
    assert tags["runtime.num_replicas"] == "1"
    assert all(isinstance(v, str) for v in tags.values())


FIRST_EPOCHS = textwrap.dedent("""
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import numpy as np, keras
    from petvision.training import runtime
    from petvision.config import TrainerConfig
    # The data stays fixed: the seed under test drives init, dropout, shuffling.
    data = np.random.default_rng(0)
    x = data.integers(0, 256, (64, 16, 16, 3)).astype("uint8")
    y = data.integers(0, 2, (64, 1))
    for seed in sys.argv[1:]:
        runtime.setup(TrainerConfig(device="cpu", precision="auto", xla=False, strategy="default",
                                    seed=int(seed), deterministic=True, resume=False))
        model = keras.Sequential([
            keras.Input((16, 16, 3)), keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.MaxPooling2D(),
            keras.layers.Flatten(), keras.layers.Dropout(0.5),
            keras.layers.Dense(1, activation="sigmoid", dtype="float32"),
        ])
        model.compile(optimizer="rmsprop", loss="binary_crossentropy")
        history = model.fit(x, y, batch_size=8, epochs=1, shuffle=True, verbose=0)
        print(float(history.history["loss"][0]).hex())
""")


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_same_seed_same_first_epoch_loss_in_fresh_processes():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    # The second process also trains with another seed: that loss must differ, or equality
    # would prove nothing about the seed.
    runs = [["1337"], ["1337", "42"]]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", FIRST_EPOCHS, *seeds],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seeds in runs
    ]
    losses = []
    for process in processes:
        out, err = process.communicate(timeout=150)
        assert process.returncode == 0, err[-3000:]
        losses.append(out.split())
    (first,), (again, other) = losses
    assert first == again
    assert first != other


def test_mirrored_strategy_on_this_machine():
    rt = runtime.setup(trainer(device="cpu", strategy="mirrored"))
    assert rt.strategy_name == "mirrored" and rt.num_replicas == 1
    with rt.strategy.scope():
        layer = keras.layers.Dense(2)
        layer.build((None, 3))
    assert layer.kernel.shape == (3, 2)


def test_the_compile_cache_and_xla_flags_leave_tensorflow_as_it_was(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/nowhere")
    cfg = trainer(device="cpu", xla_flags="--xla_gpu_autotune_level=0", compile_cache=True)
    rt = runtime.setup(cfg, tmp_path / "cache")
    assert rt.compile_cache is None and not (tmp_path / "cache").exists()
    assert "runtime.compile_cache" not in rt.describe() and "runtime.xla_flags" not in rt.describe()
    assert os.environ["XLA_FLAGS"] == "--xla_dump_to=/nowhere"
    assert "trainer.xla_flags applies to the JAX backend; ignored on tensorflow" in caplog.text


@pytest.mark.parametrize("flags", ["xla_gpu_autotune_level=0", "--xla_gpu_autotune_level 0", "-x"])
def test_malformed_xla_flags_are_refused_before_xla_sees_them(flags):
    # XLA itself aborts the process on a flag it does not know, naming it; these it cannot parse.
    with pytest.raises(ConfigError, match=r"trainer\.xla_flags=.*is not of the form --xla_name"):
        runtime.setup(trainer(device="cpu", xla_flags=flags))


ON_JAX = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    import jax, jax.numpy as jnp, keras
    from petvision.config import TrainerConfig
    from petvision.core.errors import ConfigError
    from petvision.training import runtime

    assert keras.backend.backend() == "jax"
    folder = Path(sys.argv[1])
    jax.jit(lambda x: x * 2)(jnp.ones(3))  # a compilation before setup: JAX decides on a cache then
    def cfg(**kw):
        values = dict(device="cpu", precision="float32", xla=False, strategy="default", seed=1,
                      deterministic=False, resume=False)
        return TrainerConfig(**{**values, **kw})
    report = {}
    off = runtime.setup(cfg(compile_cache=False), folder)
    report["off"] = [off.compile_cache is None, jax.config.jax_compilation_cache_dir, folder.exists()]
    os.environ["XLA_FLAGS"] = "--xla_gpu_autotune_level=4 --xla_dump_hlo_as_text"
    rt = runtime.setup(cfg(xla_flags="--xla_gpu_autotune_level=1", deterministic=True), folder)
    report["flags"] = os.environ["XLA_FLAGS"]
    report["on"] = [str(rt.compile_cache), jax.config.jax_compilation_cache_dir,
                    rt.describe().get("runtime.compile_cache")]
    report["tagged_flags"] = rt.describe().get("runtime.xla_flags")
    def entries(where):
        # Everything that compiles, however fast, goes in: the test's functions take milliseconds.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.jit(lambda x: x * 3 + len(str(where)))(jnp.ones(3))
        return len(list(where.glob("jit_*")))
    report["entries"] = [entries(folder)]
    # Another folder in the same process (JAX opens its cache once, at the first use).
    elsewhere = folder.parent / "elsewhere"
    runtime.setup(cfg(), elsewhere)
    report["entries"].append(entries(elsewhere))
    try:
        runtime.setup(cfg(device="gpu"))
        report["gpu"] = "accepted"
    except ConfigError as exc:
        report["gpu"] = str(exc)
    print(json.dumps(report))
""")


@pytest.mark.timeout(300)
def test_on_jax_the_compile_cache_is_used_and_the_xla_flags_go_into_xla_flags(tmp_path):
    pytest.importorskip("jax")
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": os.pathsep.join([str(Path(runtime.__file__).parents[2])]),
    }
    for name in ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", ON_JAX, str(tmp_path / "cache")],
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    folder = str(tmp_path / "cache")
    assert report["off"] == [
        True,
        None,
        False,
    ]  # trainer.compile_cache=false: nothing set, no folder
    # The configured flag replaces the one of the same name; determinism adds its own.
    assert report["flags"] == (
        "--xla_dump_hlo_as_text --xla_gpu_autotune_level=1 --xla_gpu_deterministic_ops=true"
    )
    assert report["on"] == [folder, folder, folder]
    assert report["tagged_flags"] == report["flags"]  # what the run was compiled with, in MLflow
    # Used although a compilation came before setup, and moved when setup names another folder.
    assert report["entries"] == [1, 1]
    assert "trainer.device='gpu' but the jax backend sees no GPU" in report["gpu"]
