#!/usr/bin/env bash
# The testbed's main job on a GPU machine that has torch and transformers but not verl or Ray.
#   bash tools/gpu_testbed/run.sh WHEEL_DIR OUT_DIR [more testbed arguments]
# WHEEL_DIR holds the wheels of tools/gpu_testbed/requirements.txt for that machine's Python (download_wheels.sh,
# where a package index is reachable). They are unpacked into a temporary folder on PYTHONPATH (no pip needed, the
# machine's Python is left as it is). verl imports ray and datasets when it is imported, though the testbed never
# starts Ray or loads a dataset: the machine needs them installed (Ray's wheel, 79 MB, is too big to travel in
# WHEEL_DIR here). Writes OUT_DIR/env.txt (versions, device) and OUT_DIR/cuda (the run folder).
set -euo pipefail
wheels="$1" out="$2"; shift 2
PY="${PYTHON:-python3}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
site="$(mktemp -d)"
trap 'rm -rf "$site"' EXIT
for wheel in "$wheels"/*.whl; do "$PY" -m zipfile -e "$wheel" "$site"; done  # a wheel is a zip of its files
export PYTHONPATH="$site:$root${PYTHONPATH:+:$PYTHONPATH}"
for module in ray datasets; do
  "$PY" -c "import $module" 2>/dev/null || {
    echo "tools/gpu_testbed/run.sh: verl imports '$module' at import time and this Python lacks it; install it" \
         "(pip install $module) and rerun" >&2; exit 1; }
done
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
