#!/usr/bin/env bash
# Qwen2.5-7B-Instruct on DeepMath-103K (cold start), several 8-GPU nodes, vLLM rollouts, FSDP2
# (sizes after verl's DAPO example, scaled to NNODES nodes). Validation: MATH500 (add AIME sets via data.val_files).
#   bash recipes/deepmath_qwen2.5_7b.sh <method> [hydra overrides...]        (on a running Ray cluster: see
#   recipes/multinode/ray_cluster.sh, which calls this recipe with its launcher)
#   methods: the table in sspo_verl/loss/methods.py (`python -m sspo_verl.tools.method_lines --list`), and
#            sspo_<gate> for each gate of GATE_MODULE (recipes/lib/methods.sh)
#   knobs (env): DATA_DIR (~/data), MODEL, NNODES (2), NGPUS (8), TRAIN_BATCH (256), STEPS_PER_BATCH (4),
#                TAU_POS / TAU_NEG or TAU_FROM_CLIP, GATE_MODULE, DRY_RUN=1, PREFLIGHT=0, PYTHON (recipes/lib/run.sh)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/run.sh"
recipe_usage "$@"
METHOD="$1"; shift
DATA_DIR="${DATA_DIR:-$HOME/data}"
MODEL="${MODEL:-Qwen/Qwen2.5-7B-Instruct}"
TRAIN_BATCH="${TRAIN_BATCH:-256}"
STEPS_PER_BATCH="${STEPS_PER_BATCH:-4}"
check_batch_knobs
run_recipe "$METHOD" \
  data.train_files="$DATA_DIR/deepmath/train.parquet" data.val_files="$DATA_DIR/math500/test.parquet" \
  data.train_batch_size="$TRAIN_BATCH" data.max_prompt_length=1024 data.max_response_length=8192 \
  actor_rollout_ref.model.path="$MODEL" \
  actor_rollout_ref.actor.ppo_mini_batch_size=$((TRAIN_BATCH / STEPS_PER_BATCH)) \
  actor_rollout_ref.actor.use_dynamic_bsz=True actor_rollout_ref.actor.ppo_max_token_len_per_gpu=24576 \
  actor_rollout_ref.actor.fsdp_config.param_offload=False actor_rollout_ref.actor.fsdp_config.optimizer_offload=False \
  actor_rollout_ref.rollout.n=8 \
  actor_rollout_ref.rollout.tensor_model_parallel_size=2 actor_rollout_ref.rollout.gpu_memory_utilization=0.7 \
  actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=True actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=32768 \
  actor_rollout_ref.ref.log_prob_use_dynamic_bsz=True actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=32768 \
  trainer.project_name=sspo_deepmath_7b \
  trainer.n_gpus_per_node="${NGPUS:-8}" trainer.nnodes="${NNODES:-2}" trainer.total_epochs=1 \
  trainer.test_freq=20 trainer.save_freq=100 \
  -- "$@"
