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
# What `pip install .` would add beside the source: the package's metadata with the verl.plugins entry point that
# setup.py declares, through which verl finds the loss modes (without it: "Unsupported loss mode: sspo").
dist="$site/sspo_verl-0.0.dist-info"; mkdir -p "$dist"
printf 'Metadata-Version: 2.1\nName: sspo-verl\nVersion: 0.0\n' > "$dist/METADATA"
"$PY" - "$root/setup.py" > "$dist/entry_points.txt" <<'PYEOF'
import ast, sys
call = next(n for n in ast.walk(ast.parse(open(sys.argv[1]).read())) if isinstance(n, ast.Call)
            and any(k.arg == "entry_points" for k in n.keywords))
for group, entries in ast.literal_eval(next(k.value for k in call.keywords if k.arg == "entry_points")).items():
    print(f"[{group}]", *entries, sep="\n")
PYEOF
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
