#!/usr/bin/env bash
# The testbed's main job on a GPU machine that has torch and transformers but not verl or Ray.
#   bash tools/gpu_testbed/run.sh WHEEL_DIR OUT_DIR [more testbed arguments]
# WHEEL_DIR holds the wheels of tools/gpu_testbed/requirements.txt for that machine's Python (download_wheels.sh,
# where a package index is reachable). They are unpacked into a temporary folder on PYTHONPATH (no pip needed, the
# machine's Python is left as it is); stubs/ stands in for ray and datasets, which verl imports and the testbed never
# uses. Writes OUT_DIR/env.txt (versions, device) and OUT_DIR/cuda (the run folder).
set -euo pipefail
wheels="$1" out="$2"; shift 2
PY="${PYTHON:-python3}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
site="$(mktemp -d)"
trap 'rm -rf "$site"' EXIT
for wheel in "$wheels"/*.whl; do "$PY" -m zipfile -e "$wheel" "$site"; done  # a wheel is a zip of its files
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
