#!/usr/bin/env bash
# Read training runs with the comparison tool: one table (and plots) per set of runs.
#   bash examples/compare_runs.sh        (PYTHON=python3 unless set; OUT=<folder> for the reports, else a temp one)
set -euo pipefail
PYTHON="${PYTHON:-python3}"
cd "$(dirname "${BASH_SOURCE[0]}")/.."  # the repository root, where the committed runs live
RUN=docs/results/main-cpu
SWEEP=docs/results/sweep-cpu/metrics.jsonl.gz
OUT="${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/sspo-compare-XXXXXX")}"  # kept: summary.md and the plots are in it

# 1. The committed CPU testbed run folder: its records carry method and seed, so a bare --run PATH takes every run
#    in it. The baseline is grpo_dapo (the testbed's) when present; the held-out metric is the testbed's val_acc.
echo "== $RUN, measured against grpo_dapo"
"$PYTHON" -m sspo_verl.tools.compare --run "$RUN" --out "$OUT/testbed"

# 2. The committed sweep (every method at several knobs and M = 1..16, 3 seeds each): one row per method, knob and
#    M, never pooled as seeds. --where keeps some of them: here M = 16, against DAPO's default clip.
echo "== $SWEEP at M = 16"
"$PYTHON" -m sspo_verl.tools.compare --run "$SWEEP" --where M=16 --baseline "grpo_dapo [clip 0.2/0.28 (default)]" \
  --out "$OUT/sweep_m16"

# 3. Your own verl runs: launch each with trainer.logger='[console,file]'. verl's file logger writes one line per
#    step, {"step": N, "data": {"critic/score/mean": ..., "actor/ppo_kl": ..., ...}}, to $VERL_FILE_LOGGER_PATH
#    if set (recipes/cpu_tiny.sh: <run folder>/metrics.jsonl), else to <trainer.project_name>/<trainer.experiment_name>.jsonl
#    under $VERL_FILE_LOGGER_ROOT (default: the folder main_ppo was launched from).
#    To show the format, write such run folders here from the committed run, one per method and seed, with verl's keys.
mkdir -p "$OUT/verl_runs"
"$PYTHON" - "$RUN/metrics.jsonl" "$OUT/verl_runs" <<'EOF'
import json, os, sys
VERL_KEYS = {"reward": "critic/score/mean", "entropy": "actor/entropy", "ppo_kl": "actor/ppo_kl",
             "grad_norm": "actor/grad_norm", "pg_clipfrac": "actor/pg_clipfrac", "pg_loss": "actor/pg_loss",
             "response_len": "response_length/mean", "val_acc": "val-core/sspo/arithmetic/acc/mean@1"}
run, out = sys.argv[1:]
files = {}
for line in open(run):
    r = json.loads(line)
    if r["method"] in ("grpo_dapo", "sspo"):
        data = {verl: r[key] for key, verl in VERL_KEYS.items() if key in r}
        data.update({f"actor/{k}": v for k, v in r.items() if k.startswith("sspo/")})  # the SSPO loss's own metrics
        folder = f"{out}/{r['method']}_seed{r['seed']}"
        if folder not in files:
            os.makedirs(folder, exist_ok=True)
            files[folder] = open(f"{folder}/metrics.jsonl", "w")
        files[folder].write(json.dumps({"step": r["step"], "data": data}) + "\n")
for f in files.values():
    f.close()
EOF
echo "== verl file-logger logs: $(cd "$OUT/verl_runs" && echo */metrics.jsonl)"
head -c 300 "$OUT/verl_runs/sspo_seed0/metrics.jsonl"; echo " ..."

# --run METHOD=PATH per run (a run folder, or the log itself); repeating a method adds a seed. TensorBoard folders,
# console logs and wandb CSV exports read the same way (python -m sspo_verl.tools.compare --help). These logs have
# one validation source, so it is the held-out metric; a cpu_tiny run has three, and its .hydra/config.yaml tells
# which one it trains on.
runs=()
for folder in "$OUT"/verl_runs/*/; do
  name=$(basename "$folder")
  runs+=(--run "${name%_seed*}=$folder")
done
"$PYTHON" -m sspo_verl.tools.compare "${runs[@]}" --out "$OUT/verl"
