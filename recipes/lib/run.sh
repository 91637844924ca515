# Shared launcher: setting overrides + method overrides + the user's "$@" (last, so any key can be overridden).
#   DRY_RUN=1      compose verl's real config, run main_ppo's own checks on it (verl's validate_config, with the
#                  plugin's), print the command, exit 0 (no GPU needed); the launch runs the same checks
#   LAUNCHER=...   what runs the overrides (default: python3 -m verl.trainer.main_ppo); the multi-node recipes
#                  wrap it in `ray job submit`
#   PREFLIGHT_ADDRESS=HEAD_IP:PORT  run `python -m sspo_verl.tools.preflight` against that Ray cluster with the same
#                  overrides before the launcher (PREFLIGHT_ARGS: its options); the multi-node recipes set it.
#                  Without it, `python -m sspo_verl.tools.preflight --local` checks this machine the same way (a fresh
#                  interpreter, as main_ppo's workers here start): a loss mode they would not have fails in
#                  seconds with verl's `Unsupported loss mode`, not after the first rollout. PREFLIGHT=0 skips both.
RECIPES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$RECIPES_DIR/lib/methods.sh"
PYTHON="${PYTHON:-python3}"

# What every setting shares: GRPO advantages, FSDP2, no KL / entropy terms, vLLM rollouts, our rewards, logging.
COMMON_OVERRIDES=(
  algorithm.adv_estimator=grpo
  data.filter_overlong_prompts=True data.truncation=error
  actor_rollout_ref.model.use_remove_padding=True actor_rollout_ref.model.enable_gradient_checkpointing=True
  actor_rollout_ref.actor.strategy=fsdp2 actor_rollout_ref.actor.optim.lr=1e-6
  actor_rollout_ref.actor.use_kl_loss=False actor_rollout_ref.actor.entropy_coeff=0
  actor_rollout_ref.rollout.name=vllm
  reward.custom_reward_function.path=pkg://sspo_verl.rewards reward.custom_reward_function.name=compute_score
  'trainer.logger=["console","tensorboard"]' trainer.val_before_train=True
)

# Hydra key <- the environment knob the recipes set it from (lib/methods.sh, the recipe files). A bad value is
# then reported with the variable the user set, not only the key (SSPO_RECIPE_KNOBS, read by sspo_verl.loss.plugin).
KNOB_KEYS=(
  actor_rollout_ref.actor.tau_pos=TAU_POS actor_rollout_ref.actor.tau_neg=TAU_NEG
  actor_rollout_ref.actor.ppo_mini_batch_size=STEPS_PER_BATCH data.train_batch_size=TRAIN_BATCH
)

# knob_sources <user overrides...>: "key=VAR;..." for each knob that is set and whose key the user did not set again
knob_sources() {
  local pair key var arg sources="" overridden
  for pair in "${KNOB_KEYS[@]}"; do
    key="${pair%%=*}"; var="${pair#*=}"
    [ -n "${!var:-}" ] || continue
    overridden=0
    for arg in "$@"; do arg="${arg#+}"; arg="${arg#+}"; [ "${arg%%=*}" = "$key" ] && overridden=1; done
    [ "$overridden" = 1 ] || sources+="${sources:+;}$key=$var"
  done
  printf '%s' "$sources"
}

# check_batch_knobs: TRAIN_BATCH and STEPS_PER_BATCH are whole numbers >= 1 (a recipe divides one by the other;
# bash would say only "division by 0" or "abc: unbound variable")
check_batch_knobs() {
  local var
  for var in TRAIN_BATCH STEPS_PER_BATCH; do
    if ! [[ "${!var:-}" =~ ^[1-9][0-9]*$ ]]; then
      echo "$var='${!var:-}' must be a whole number >= 1: the recipe sets actor_rollout_ref.actor.ppo_mini_batch_size" \
           "= TRAIN_BATCH / STEPS_PER_BATCH (e.g. STEPS_PER_BATCH=4: 4 optimizer steps per rollout batch)" >&2
      return 1
    fi
  done
}

# run_recipe <method> <setting overrides...> -- <user overrides...>
# order: common, setting, method (loss lines), experiment name, user: later keys win
run_recipe() {
  local method="$1"; shift
  local setting=() user=() seen_sep=0 line
  for arg in "$@"; do
    if [ "$seen_sep" = 0 ] && [ "$arg" = "--" ]; then seen_sep=1; continue; fi
    if [ "$seen_sep" = 0 ]; then setting+=("$arg"); else user+=("$arg"); fi
  done
  local loss=()
  while IFS= read -r line; do loss+=("$line"); done < <(method_overrides "$method") || return 1
  [ "${#loss[@]}" -gt 0 ] || return 1  # method_overrides said why on stderr
  SSPO_RECIPE_KNOBS="$(knob_sources "${user[@]+"${user[@]}"}")"
  export SSPO_RECIPE_KNOBS TAU_POS TAU_NEG STEPS_PER_BATCH TRAIN_BATCH  # the dry run, preflight and main_ppo read them
  local all=("${COMMON_OVERRIDES[@]}" "${setting[@]}" "${loss[@]}" "trainer.experiment_name=${EXPERIMENT_NAME:-$method}" "${user[@]}")
  local launcher="${LAUNCHER:-$PYTHON -m verl.trainer.main_ppo}"
  if [ "${DRY_RUN:-0}" = 1 ]; then
    "$PYTHON" -m sspo_verl.tools.dry_run --launcher "$launcher" -- "${all[@]}"
  else
    if [ "${PREFLIGHT:-1}" != 0 ]; then
      if [ -n "${PREFLIGHT_ADDRESS:-}" ]; then
        # shellcheck disable=SC2086  # options
        "$PYTHON" -m sspo_verl.tools.preflight --address "$PREFLIGHT_ADDRESS" ${PREFLIGHT_ARGS:-} -- "${all[@]}" || return 1
      else
        "$PYTHON" -m sspo_verl.tools.preflight --local -- "${all[@]}" || return 1
      fi
    fi
    # shellcheck disable=SC2086  # the launcher is a command line
    $launcher "${all[@]}"
  fi
}
