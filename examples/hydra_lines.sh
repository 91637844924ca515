#!/usr/bin/env bash
# The launch block of each method, ready to paste, each checked against verl's real trainer config first.
#   bash examples/hydra_lines.sh [method...]      (default: every method)
# The loss lines come from `python -m sspo_verl.tools.method_lines <method>`, the table the recipes read; the
# temperature knobs TAU_POS / TAU_NEG / TAU_FROM_CLIP in the environment apply to sapo and sspo*. The Python is the
# recipes' (recipes/lib/python.sh: PYTHON, else python3 when it has verl, else this repository's .venv).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."  # the repository root: sspo_verl importable without an install too
source recipes/lib/python.sh
choose_python || exit 2

# Placeholders for your data, model and batch. verl needs these keys to compose its config; the dry run only
# reports missing data files. ppo_mini_batch_size < train_batch_size: several optimizer steps per rollout batch,
# the off-policy regime where SSPO's gates act (on-policy every gate is open).
COMMON=(
  algorithm.adv_estimator=grpo
  data.train_files=/path/to/train.parquet data.val_files=/path/to/test.parquet
  actor_rollout_ref.model.path=/path/to/model
  data.train_batch_size=256 actor_rollout_ref.rollout.n=8
  actor_rollout_ref.actor.ppo_mini_batch_size=64 actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=16
)
if (($# == 0)); then
  read -r -a methods <<<"$("$PYTHON" -c 'from sspo_verl.loss.methods import METHODS; print(*METHODS)')"
else
  methods=("$@")
fi

blocks=$(mktemp -d)
trap 'rm -rf "$blocks"' EXIT
loss_lines() {  # loss_lines <method>: the method's Hydra lines into $loss; on an error stderr says why, and we stop
  mapfile -t loss < <("$PYTHON" -m sspo_verl.tools.method_lines "$1")
  ((${#loss[@]})) || exit 1
}
n=0
block() {  # block <label> <lines...>: one launch block, saved for the check below
  n=$((n + 1))
  printf '%s\n' "# $1" "${COMMON[@]}" "${@:2}" >"$blocks/$(printf %02d "$n")"
}
for method in "${methods[@]}"; do
  loss_lines "$method"
  block "$method" "${loss[@]}"
done

# Temperatures, two ways. A Hydra override after the method's lines wins (Hydra takes the last value):
loss_lines sspo
block "sspo, temperatures overridden" "${loss[@]}" \
  actor_rollout_ref.actor.tau_pos=0.5 actor_rollout_ref.actor.tau_neg=2.0
# ...or TAU_FROM_CLIP="low high": the gate passes half its gradient where a PPO clip 0.2/0.28 would clip.
TAU_POS= TAU_NEG= TAU_FROM_CLIP="0.2 0.28" loss_lines sspo
block 'sspo, TAU_FROM_CLIP="0.2 0.28"' "${loss[@]}"

# The check is `python -m sspo_verl.tools.dry_run -- <a block's overrides>` (verl's config composition and
# validate_config, as main_ppo runs them); here every block in one process, so verl is imported once, not per block.
"$PYTHON" - "$blocks"/* <<'EOF'
import sys
from sspo_verl.tools import dry_run

failed = []
for path in sys.argv[1:]:
    label, *overrides = open(path).read().splitlines()
    print(f"\n{label}")
    if dry_run.main(overrides) != 0:  # prints the notes and the checked block, or the reason it fails
        failed.append(label)
passed = len(sys.argv) - 1 - len(failed)
print(f"\n{passed} blocks pass verl's config checks" + (f"; FAILED: {failed}" if failed else ""))
sys.exit(1 if failed else 0)
EOF
