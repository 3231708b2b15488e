#!/usr/bin/env bash
# The Python packages the lent GPU machine's image lacks, as wheels in .whl/ (git-ignored), for
# its Python 3.12 on x86-64: what scripts/gpu_check and the five stages (run by scripts/gpu_run)
# import beyond that image. The image has JAX, NumPy, SciPy, pandas, pyarrow, Pillow,
# matplotlib, requests, tqdm, PyYAML, protobuf, click, Jinja2, h5py, rich and the like, but no
# TensorFlow, Keras, MLflow, Hydra or Optuna (the device tool's package list says which), so what
# travels is Keras, MLflow's client with its SQLite store, Hydra and Optuna, and what they need
# that the image lacks. Versions are the lock's; one version of each (two stop the install there).
# antlr4-python3-runtime 4.9.3 exists only as a source archive: it is built here into a
# pure-Python wheel. Together about 30 MB (a call carries 64 MiB, the working tree included).
#
#   scripts/gpu_wheels.sh          # then see docs/benchmarks.md ("GPU") for the run command
set -euo pipefail
cd "$(dirname "$0")/.."

lock_version() {  # the pinned version of $1 in requirements.lock
    local v
    v=$(grep -i -E "^$1==" requirements.lock | head -1 | cut -d= -f3)
    [[ -n "$v" ]] || { echo "error: $1 is not pinned in requirements.lock" >&2; exit 1; }
    echo "$v"
}

PIP=(python3 -m pip)
OUT=.whl
rm -rf "$OUT" && mkdir -p "$OUT"

# keras and its needs; the configuration (Hydra); MLflow's client, its SQLite tracking store
# (SQLAlchemy, Alembic, Mako) and what its import pulls in; Optuna (the stages import the search
# callbacks); pydot for keras.utils.plot_model.
PACKAGES=(
    keras namex optree
    omegaconf hydra-core
    mlflow-skinny mlflow-tracing sqlalchemy alembic mako sqlparse
    pydantic pydantic_core typing-inspection annotated-types fastapi starlette cachetools
    databricks-sdk google-auth pyasn1 pyasn1_modules cryptography cffi importlib_metadata
    opentelemetry-api opentelemetry-sdk opentelemetry-proto opentelemetry-semantic-conventions
    orjson python-dotenv gitpython gitdb smmap
    optuna colorlog alembic
    pydot
)
binary=()
for name in $(printf '%s\n' "${PACKAGES[@]}" | sort -u); do
    binary+=("$name==$(lock_version "$name")")
done
"${PIP[@]}" download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$OUT" "${binary[@]}"

# No wheel on the index: build one (pure Python, so the wheel built here runs there).
"${PIP[@]}" wheel --quiet --disable-pip-version-check --no-deps -w "$OUT" \
    "antlr4-python3-runtime==$(lock_version antlr4-python3-runtime)"

# Keep one version of each: two of one package stop the whole install there.
dupes=$(ls "$OUT" | sed -E 's/-[0-9].*//' | tr 'A-Z-' 'a-z_' | sort | uniq -d)
[[ -z "$dupes" ]] || { echo "error: several versions of: $dupes" >&2; exit 1; }
ls -l "$OUT"
du -sh "$OUT"
