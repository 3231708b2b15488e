#!/usr/bin/env bash
# The Python packages scripts/gpu_check needs that the lent GPU machine's image lacks, as wheels
# in .whl/ (git-ignored), for its Python 3.12 on x86-64. That image has JAX, NumPy, h5py, rich,
# absl-py, ml-dtypes, packaging and PyYAML but no TensorFlow and no Keras (see the device tool's
# KINDS.md), so what travels is Keras and the pure-Python rest of its and petvision.config's needs:
#   keras, namex, optree (compiled: a cp312 manylinux wheel), omegaconf, antlr4-python3-runtime.
# Versions are the lock's. antlr4-python3-runtime 4.9.3 exists only as a source archive: it is
# built here into a pure-Python wheel. Everything together is about 3 MB (a call carries 64 MiB).
#
#   scripts/gpu_wheels.sh          # then see docs/benchmarks.md ("GPU check") for the run command
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

binary=()
for name in keras namex optree omegaconf; do
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
