#!/usr/bin/env bash
# Wheels for tools/gpu_testbed/run.sh, for the GPU machine's Python (ask it: python3 -V), into DEST.
#   bash tools/gpu_testbed/download_wheels.sh 3.11 .venv/gpu_wheels
# Run where a package index is reachable; PIP defaults to .venv/bin/pip. About 35 MB for CPython 3.11 x86_64.
set -euo pipefail
pyver="$1" dest="$2"
PIP="${PIP:-.venv/bin/pip}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$dest"
# antlr4-python3-runtime (omegaconf's parser) ships only an sdist: build its pure-Python wheel here
grep -v '^#' "$here/requirements.txt" | grep -v '^antlr4' > "$dest/.binary.txt"
"$PIP" download -q --no-deps --only-binary=:all: --python-version "$pyver" --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    -d "$dest" -r "$dest/.binary.txt"
"$PIP" wheel -q --no-deps -w "$dest" "$(grep '^antlr4' "$here/requirements.txt")"
rm "$dest/.binary.txt"
du -sh "$dest"
