#!/usr/bin/env bash
# verl's main_ppo on a CPU, end to end: the recipes' real path (Ray, the agent loop, the reward loop, FSDP2, the
# trainer), with a tiny Qwen2 cold-started on arithmetic, to rehearse a recipe on a laptop or test it in CI.
#   bash recipes/cpu_tiny.sh <method> [hydra overrides...]          e.g. bash recipes/cpu_tiny.sh sspo
#   methods: those of the methods table (sspo_verl/loss/methods.py); the recipe with no argument lists them
#   knobs (env): DATA_DIR (~/data/sspo_cpu_tiny: data and cold start, made on first use, about a minute),
#                COLD_START_SEED (0), RUN_DIR (the run's folder: logs, main_ppo's resolved config in .hydra/,
#                checkpoints/; default runs/cpu_tiny/<method>), STEPS (30), TRAIN_BATCH (16 prompts),
#                STEPS_PER_BATCH (4), NGPUS (1 rank), TAU_POS / TAU_NEG, TAU_FROM_CLIP, DRY_RUN=1
#   resume after a crash: trainer.save_freq=N saves a checkpoint every N steps under RUN_DIR/checkpoints; the same
#                command again continues from the last one (verl's trainer.resume_mode=auto)
#
# Same as the GPU recipes: recipes/lib/run.sh with its COMMON_OVERRIDES and the method's loss lines, GRPO with
# rollout.n samples per prompt, ppo_mini_batch_size = train_batch_size / STEPS_PER_BATCH (4 optimizer steps per
# rollout batch: the off-policy regime), our rewards, validation before training and every test_freq steps.
# What differs, and why:
#   rollout.name=hf                  transformers rollout server (sspo_verl/verl_on_cpu/cpu_rollout.py): no vLLM on CPU
#   VERL_PLATFORM=cpu + cpu_platform verl 0.9.1 has no CPU platform (sspo_verl/verl_on_cpu/cpu_platform.py: gloo,
#                                    Ray CPU resources); both modules reach every verl process through
#                                    VERL_USE_EXTERNAL_MODULES, the loss modes still through the plugin's entry point
#   +ray_kwargs.ray_init.num_gpus    verl's resource-pool check counts GPUs only; Ray is told of NGPUS logical GPUs
#                                    (no process claims them: workers are placed on CPU bundles)
#   ray_kwargs.ray_init.num_cpus=16  logical CPUs: verl's helper actors each reserve one (transfer queue, agent and
#                                    reward loop workers), more than a laptop has; they mostly wait
#   agent.num_workers=1, reward.num_workers=1, 1 transfer-queue storage unit: one process each instead of 8,
#                                    each process costs seconds to start and ~0.4 GB on a 2-core machine
#   trainer.n_gpus_per_node=1        one FSDP2 rank (gloo); NGPUS=2 runs two
#   use_remove_padding=False, attn_implementation=sdpa, gradient checkpointing off: flash-attn is GPU-only
#   model: the tiny cold start (0.3M parameters, byte tokenizer); data: arithmetic (train) and a validation set of
#          arithmetic, GSM8K-format and MATH-format rows (sspo_verl/testbed/cpu_recipe.py, made on first use)
#   sizes: 16 prompts x 8 samples per rollout batch, 16 response tokens, lr 3e-5 with 5 warm-up steps (the testbed's)
#   logger: file (VERL_FILE_LOGGER_PATH) and tensorboard (TENSORBOARD_DIR), both under RUN_DIR, every metric; the
#          console shows one short line per step (sspo_verl/verl_on_cpu/progress.py follows the file logger) instead
#          of verl's console logger, whose line carries every metric. A launch starts a new metrics.jsonl (verl's
#          file logger truncates it): an earlier launch's, e.g. before a resume, is kept as metrics.1.jsonl, ...
#   custom_sampler=fast_poll         verl's replay buffer polls for finished rollouts every 2 s; the tiny model's
#                                    take 1.4-1.8 s (sspo_verl/verl_on_cpu/fast_poll.py: the same buffer, polling every 0.2 s)
#   TQ_NUM_THREADS                   the transfer queue's torch threads (8 unless set): capped at the physical cores,
#                                    which it otherwise does itself with a warning on every call
# Like the multi-node recipes, Ray runs with token auth (the token file ~/.ray/auth_token, made 0600 when missing).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/run.sh"
recipe_usage "$@"
METHOD="$1"; shift
DATA_DIR="${DATA_DIR:-$HOME/data/sspo_cpu_tiny}"
RUN_DIR="${RUN_DIR:-runs/cpu_tiny/$METHOD}"
TRAIN_BATCH="${TRAIN_BATCH:-16}"
STEPS_PER_BATCH="${STEPS_PER_BATCH:-4}"
STEPS="${STEPS:-30}"
NGPUS="${NGPUS:-1}"
COLD_START_SEED="${COLD_START_SEED:-0}"

# Every argument is checked before any work (the cold start takes a minute on first use): the knobs, then the
# method and its temperature knobs (method_lines says what is wrong on stderr; run_recipe prints its warnings later).
check_batch_knobs || exit
check_switches || exit
if ! [[ "$STEPS" =~ ^[1-9][0-9]*$ ]]; then
  recipe_error "STEPS='$STEPS' must be a whole number >= 1 (the training steps)"; exit 2
fi
if ! [[ "$COLD_START_SEED" =~ ^[0-9]+$ ]]; then
  recipe_error "COLD_START_SEED='$COLD_START_SEED' must be a whole number >= 0 (the cold start's seed)"; exit 2
fi
if ! problem="$(method_overrides "$METHOD" "$@" 2>&1 >/dev/null)"; then
  echo "$problem" >&2; exit 2
fi

"$PYTHON" -m sspo_verl.testbed.cpu_recipe --out "$DATA_DIR" --seed "$COLD_START_SEED"
# absolute: Ray's workers load the model and write the checkpoints, whatever their working directory
mkdir -p "$RUN_DIR"
DATA_DIR="$(cd "$DATA_DIR" && pwd)" RUN_DIR="$(cd "$RUN_DIR" && pwd)"
# Ray's token auth, as on a cluster (recipes/multinode/cluster.sh): main_ppo's local Ray otherwise writes a token
# of its own, readable by everyone, to ~/.ray/auth_token. RAY_AUTH=off opts out.
source "$RECIPES_DIR/multinode/cluster.sh"
[ "${DRY_RUN:-0}" = 1 ] || ray_auth_setup head
# the CPU platform and the rollout backend load as top-level modules in every verl process (driver and Ray workers)
CPU_MODULES_DIR="$("$PYTHON" -c 'import importlib.util, os; print(os.path.join(os.path.dirname(importlib.util.find_spec("sspo_verl").origin), "verl_on_cpu"))')"
export PYTHONPATH="$CPU_MODULES_DIR${PYTHONPATH:+:$PYTHONPATH}"
export VERL_USE_EXTERNAL_MODULES="cpu_platform,cpu_rollout${VERL_USE_EXTERNAL_MODULES:+,$VERL_USE_EXTERNAL_MODULES}"
export VERL_PLATFORM=cpu
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="${RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER:-0}"  # a local Ray binds 127.0.0.1
# the transfer queue limits torch to TQ_NUM_THREADS (default 8) threads when it moves data, and warns on every call
# where that exceeds the physical cores: give it what it would fall back to
export TQ_NUM_THREADS="${TQ_NUM_THREADS:-$("$PYTHON" -c 'import psutil; print(min(8, psutil.cpu_count(logical=False) or 1))')}"
export VERL_FILE_LOGGER_PATH="${VERL_FILE_LOGGER_PATH:-$RUN_DIR/metrics.jsonl}" TENSORBOARD_DIR="${TENSORBOARD_DIR:-$RUN_DIR/tensorboard}"
if [ "${DRY_RUN:-0}" != 1 ] && [ -s "$VERL_FILE_LOGGER_PATH" ]; then  # verl's file logger would truncate it
  n=1; while [ -e "${VERL_FILE_LOGGER_PATH%.jsonl}.$n.jsonl" ]; do n=$((n + 1)); done
  mv "$VERL_FILE_LOGGER_PATH" "${VERL_FILE_LOGGER_PATH%.jsonl}.$n.jsonl"
  echo "cpu_tiny: the previous launch's log is now ${VERL_FILE_LOGGER_PATH%.jsonl}.$n.jsonl" >&2
fi

SETTING=(
  data.train_files="$DATA_DIR/train.parquet" data.val_files="$DATA_DIR/val.parquet"
  data.train_batch_size="$TRAIN_BATCH" data.max_prompt_length=256 data.max_response_length=16
  data.dataloader_num_workers=0
  actor_rollout_ref.model.path="$DATA_DIR/model"
  actor_rollout_ref.model.use_remove_padding=False actor_rollout_ref.model.enable_gradient_checkpointing=False
  +actor_rollout_ref.model.override_config.attn_implementation=sdpa
  actor_rollout_ref.actor.optim.lr=3e-5 actor_rollout_ref.actor.optim.lr_warmup_steps=5
  actor_rollout_ref.actor.ppo_mini_batch_size=$((TRAIN_BATCH / STEPS_PER_BATCH))
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=16 actor_rollout_ref.rollout.n=8
  actor_rollout_ref.rollout.name=hf actor_rollout_ref.rollout.tensor_model_parallel_size=1
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=32
  actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=32
  trainer.project_name=sspo_cpu_tiny 'trainer.logger=["file","tensorboard"]'
  trainer.n_gpus_per_node="$NGPUS" trainer.nnodes=1 trainer.device=cpu
  trainer.total_training_steps="$STEPS" trainer.test_freq=10 trainer.save_freq=-1
  trainer.default_local_dir="$RUN_DIR/checkpoints" hydra.run.dir="$RUN_DIR"
  trainer.v1.sampler.custom_sampler.path=pkg://sspo_verl.verl_on_cpu.fast_poll
  trainer.v1.sampler.custom_sampler.name=FastPollReplayBuffer
  +ray_kwargs.ray_init.num_gpus="$NGPUS" ray_kwargs.ray_init.num_cpus=16
  actor_rollout_ref.rollout.agent.num_workers=1 reward.num_workers=1
  transfer_queue.backend.SimpleStorage.num_data_storage_units=1
)
if [ "${DRY_RUN:-0}" = 1 ]; then
  run_recipe "$METHOD" "${SETTING[@]}" -- "$@"
  exit
fi
# One short line per step on the console (verl's file logger, followed); every metric stays in the logs.
total="$STEPS"
for arg in "$@"; do [[ "$arg" == trainer.total_training_steps=* ]] && total="${arg#*=}"; done
"$PYTHON" -m sspo_verl.verl_on_cpu.progress "$VERL_FILE_LOGGER_PATH" --steps "$total" --watch $$ \
  --val-source sspo/arithmetic &  # the data source of cpu_recipe's arithmetic rows
progress=$!
status=0
run_recipe "$METHOD" "${SETTING[@]}" -- "$@" || status=$?
kill -TERM "$progress" 2>/dev/null || true
wait "$progress" 2>/dev/null || true
exit "$status"
