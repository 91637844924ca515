#!/usr/bin/env bash
# Read training runs with the comparison tool: one table (and plots) per set of runs.
#   bash examples/compare_runs.sh        (PYTHON=python3 unless set; OUT=<folder> for the reports, else a temp one)
set -euo pipefail
PYTHON="${PYTHON:-python3}"
cd "$(dirname "${BASH_SOURCE[0]}")/.."  # the repository root, where the committed run lives
RUN=docs/results/main-cpu/metrics.jsonl
OUT="${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/sspo-compare-XXXXXX")}"  # kept: summary.md and the plots are in it

# 1. The committed CPU testbed run: its records carry method and seed, so a bare --run PATH takes every run in it.
echo "== $RUN, measured against grpo_dapo"
"$PYTHON" -m sspo_verl.tools.compare --run "$RUN" --baseline grpo_dapo --out "$OUT/testbed"

# 2. Your own verl runs: launch each with trainer.logger='[console,file]'. verl's file logger writes one line per
#    step, {"step": N, "data": {"critic/score/mean": ..., "actor/ppo_kl": ..., ...}}, to $VERL_FILE_LOGGER_PATH
#    if set, else to <trainer.project_name>/<trainer.experiment_name>.jsonl under $VERL_FILE_LOGGER_ROOT (default:
#    the folder main_ppo was launched from).
#    To show the format, write such files here from the committed run, one per method and seed, with verl's keys.
mkdir -p "$OUT/verl_logs"
"$PYTHON" - "$RUN" "$OUT/verl_logs" <<'EOF'
import json, sys
VERL_KEYS = {"reward": "critic/score/mean", "entropy": "actor/entropy", "ppo_kl": "actor/ppo_kl",
             "grad_norm": "actor/grad_norm", "pg_clipfrac": "actor/pg_clipfrac", "pg_loss": "actor/pg_loss",
             "response_len": "response_length/mean", "val_acc": "val-core/arithmetic/acc/mean@1"}
run, out = sys.argv[1:]
files = {}
for line in open(run):
    r = json.loads(line)
    if r["method"] in ("grpo_dapo", "sspo"):
        data = {verl: r[key] for key, verl in VERL_KEYS.items() if key in r}
        data.update({f"actor/{k}": v for k, v in r.items() if k.startswith("sspo/")})  # the SSPO loss's own metrics
        name = f"{out}/{r['method']}_seed{r['seed']}.jsonl"
        files[name] = files.get(name) or open(name, "w")
        files[name].write(json.dumps({"step": r["step"], "data": data}) + "\n")
for f in files.values():
    f.close()
EOF
echo "== verl file-logger logs: $(cd "$OUT/verl_logs" && echo *)"
head -c 300 "$OUT/verl_logs/sspo_seed0.jsonl"; echo " ..."

# --run METHOD=PATH per log; repeating a method adds a seed. TensorBoard folders, console logs and wandb CSV
# exports read the same way (python -m sspo_verl.tools.compare --help).
runs=()
for log in "$OUT"/verl_logs/*.jsonl; do
  name=$(basename "$log" .jsonl)
  runs+=(--run "${name%_seed*}=$log")
done
"$PYTHON" -m sspo_verl.tools.compare "${runs[@]}" --baseline grpo_dapo --out "$OUT/verl"
