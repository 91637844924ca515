#!/usr/bin/env bash
# The testbed's main job on a GPU machine that has torch and transformers but not verl or Ray.
#   bash tools/gpu_testbed/run.sh WHEEL_DIR OUT_DIR [more testbed arguments]
# WHEEL_DIR holds the wheels of tools/gpu_testbed/requirements.txt for that machine's Python (download them where a
# package index is reachable; antlr4-python3-runtime ships only an sdist: pip wheel --no-deps it). They are installed
# into a temporary folder, never into the machine's Python; stubs/ stands in for ray and datasets, which verl imports
# and the testbed never uses. Runs from the repository root; writes OUT_DIR/cuda (the run folder) and OUT_DIR/env.txt.
set -euo pipefail
wheels="$1" out="$2"; shift 2
PY="${PYTHON:-python3}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
site="$(mktemp -d)"
trap 'rm -rf "$site"' EXIT
"$PY" -m pip install -q --no-index --no-deps --target "$site" "$wheels"/*.whl
export PYTHONPATH="$here/stubs:$site:$root${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$out"
"$PY" - > "$out/env.txt" <<'PYEOF'
import platform, torch, transformers, verl
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
      "transformers", transformers.__version__, "verl", verl.__version__)
PYEOF
cat "$out/env.txt"
cd "$root"
"$PY" -m sspo_verl.testbed --device cuda --out "$out/cuda" "$@"
