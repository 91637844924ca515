#!/usr/bin/env bash
# Qwen2.5-0.5B-Instruct on GSM8K, one 8-GPU node, vLLM rollouts, FSDP2 (after verl's GSM8K GRPO example).
#   bash recipes/gsm8k_qwen2.5_0.5b.sh <method> [hydra overrides...]
#   methods: the table in sspo_verl/loss/methods.py (`python -m sspo_verl.tools.method_lines --list`), and
#            sspo_<gate> for each gate of GATE_MODULE (recipes/lib/methods.sh)
#   knobs (env): DATA_DIR (~/data/gsm8k), MODEL, TRAIN_BATCH (512), STEPS_PER_BATCH (4: optimizer steps per rollout
#                batch), TAU_POS / TAU_NEG or TAU_FROM_CLIP (soft gates), GATE_MODULE (a gate of your own), NGPUS (8),
#                DRY_RUN=1, PREFLIGHT=0, PYTHON (recipes/lib/run.sh)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/run.sh"
recipe_usage "$@"
METHOD="$1"; shift
DATA_DIR="${DATA_DIR:-$HOME/data/gsm8k}"
MODEL="${MODEL:-Qwen/Qwen2.5-0.5B-Instruct}"
TRAIN_BATCH="${TRAIN_BATCH:-512}"
STEPS_PER_BATCH="${STEPS_PER_BATCH:-4}"
check_batch_knobs
run_recipe "$METHOD" \
  data.train_files="$DATA_DIR/train.parquet" data.val_files="$DATA_DIR/test.parquet" \
  data.train_batch_size="$TRAIN_BATCH" data.max_prompt_length=512 data.max_response_length=1024 \
  actor_rollout_ref.model.path="$MODEL" \
  actor_rollout_ref.actor.ppo_mini_batch_size=$((TRAIN_BATCH / STEPS_PER_BATCH)) \
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=16 actor_rollout_ref.rollout.n=8 \
  actor_rollout_ref.rollout.tensor_model_parallel_size=1 actor_rollout_ref.rollout.gpu_memory_utilization=0.6 \
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=32 \
  actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=32 trainer.project_name=sspo_gsm8k_0.5b \
  trainer.n_gpus_per_node="${NGPUS:-8}" trainer.nnodes=1 trainer.total_epochs=15 \
  trainer.test_freq=10 trainer.save_freq=-1 \
  -- "$@"
