# Shared launcher: setting overrides + method overrides + the user's "$@" (last, so any key can be overridden).
#   DRY_RUN=1      compose verl's real config, run main_ppo's own checks on it (verl's validate_config, with the
#                  plugin's), print the command, exit 0 (no GPU needed); the launch runs the same checks
#   LAUNCHER=...   what runs the overrides (default: $PYTHON -m verl.trainer.main_ppo); the multi-node recipes
#                  wrap it in `ray job submit`
#   PYTHON         the Python that runs everything (recipes/lib/python.sh: PYTHON, else python3 when it has verl,
#                  else this repository's .venv)
#   GATE_MODULE    a gate module of your own (a .py file, or a module name): recipes/lib/methods.sh
#   PREFLIGHT_ADDRESS=HEAD_IP:PORT  run `python -m sspo_verl.tools.preflight` against that Ray cluster with the same
#                  overrides before the launcher (PREFLIGHT_ARGS: its options); the multi-node recipes set it.
#                  Without it, `python -m sspo_verl.tools.preflight --local` checks this machine the same way (a fresh
#                  interpreter, as main_ppo's workers here start): a loss mode they would not have fails in
#                  seconds with verl's `Unsupported loss mode`, not after the first rollout. PREFLIGHT=0 skips both.
RECIPES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$RECIPES_DIR/lib/python.sh"
source "$RECIPES_DIR/lib/methods.sh"
choose_python || exit 2

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
  actor_rollout_ref.model.external_lib=GATE_MODULE actor_rollout_ref.model.path=MODEL
  data.train_files=DATA_DIR data.val_files=DATA_DIR
  trainer.n_gpus_per_node=NGPUS trainer.nnodes=NNODES trainer.experiment_name=EXPERIMENT_NAME
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

recipe_error() {  # one line on stderr, as the package's command-line tools write their errors
  echo "${0##*/}: error: $*" >&2
}

# recipe_usage <the recipe's arguments...>: returns when a method comes first; else one usage line (stdout for
# -h / --help, exit 0; stderr, exit 2), with the methods as method_lines lists them
recipe_usage() {
  if [ $# -gt 0 ] && [[ "$1" != -* ]]; then return 0; fi
  local methods line
  methods="$("$PYTHON" -m sspo_verl.tools.method_lines --list)" || exit 2
  line="usage: bash $0 <method> [hydra overrides...]; methods: $methods, sspo_<gate> for a gate of GATE_MODULE;"
  line+=" knobs: see the head of $0"
  if [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; then echo "$line"; exit 0; fi
  echo "$line" >&2
  exit 2
}

# check_whole_numbers <VAR...>: each variable holds a whole number >= 1 (else one line naming it, and a failure)
check_whole_numbers() {
  local var
  for var in "$@"; do
    if ! [[ "${!var:-}" =~ ^[1-9][0-9]*$ ]]; then
      case "$var" in
        TRAIN_BATCH|STEPS_PER_BATCH)
          recipe_error "$var='${!var:-}' must be a whole number >= 1: the recipe sets" \
            "actor_rollout_ref.actor.ppo_mini_batch_size = TRAIN_BATCH / STEPS_PER_BATCH (e.g. STEPS_PER_BATCH=4: 4" \
            "optimizer steps per rollout batch)" ;;
        *) recipe_error "$var='${!var:-}' must be a whole number >= 1 (NGPUS: GPUs per node, NNODES: nodes)" ;;
      esac
      return 2
    fi
  done
}

# check_batch_knobs: TRAIN_BATCH and STEPS_PER_BATCH are whole numbers >= 1 (a recipe divides one by the other;
# bash would say only "division by 0" or "abc: unbound variable"), and so are NGPUS and NNODES when set (verl would
# fail on them far from the knob: "unsupported operand type(s) for %: 'int' and 'str'")
check_batch_knobs() {
  check_whole_numbers TRAIN_BATCH STEPS_PER_BATCH || return
  local var
  for var in NGPUS NNODES; do
    [ -z "${!var:-}" ] || check_whole_numbers "$var" || return
  done
}

# check_switches: DRY_RUN and PREFLIGHT are 0 or 1 (DRY_RUN=true must not launch a real run)
check_switches() {
  local var
  for var in DRY_RUN PREFLIGHT; do
    case "${!var:-}" in
      ""|0|1) ;;
      *) recipe_error "$var='${!var}' must be 0 or 1 (DRY_RUN=1: check the config and print the command;" \
           "PREFLIGHT=0: skip the preflight)"; return 2 ;;
    esac
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
  check_switches || return
  local loss=()
  while IFS= read -r line; do loss+=("$line"); done < <(method_overrides "$method" "${user[@]+"${user[@]}"}")
  [ "${#loss[@]}" -gt 0 ] || return 2  # method_overrides said why on stderr (a user error: a method or a knob)
  export_gate_module_path  # a GATE_MODULE file: every process started from here imports it from its folder
  SSPO_RECIPE_KNOBS="$(knob_sources "${user[@]+"${user[@]}"}")"
  # the dry run, preflight and main_ppo read them (an error names the knob behind a key)
  export SSPO_RECIPE_KNOBS TAU_POS TAU_NEG STEPS_PER_BATCH TRAIN_BATCH
  local knob
  for knob in GATE_MODULE MODEL DATA_DIR NGPUS NNODES EXPERIMENT_NAME; do [ -z "${!knob:-}" ] || export "$knob"; done
  local all=("${COMMON_OVERRIDES[@]}" "${setting[@]}" "${loss[@]}" "trainer.experiment_name=${EXPERIMENT_NAME:-$method}" "${user[@]}")
  local launcher="${LAUNCHER:-$PYTHON -m verl.trainer.main_ppo}"
  if [ "${DRY_RUN:-0}" = 1 ]; then
    "$PYTHON" -m sspo_verl.tools.dry_run --launcher "$launcher" -- "${all[@]}"
  else
    if [ "${PREFLIGHT:-1}" != 0 ]; then
      if [ -n "${PREFLIGHT_ADDRESS:-}" ]; then
        # shellcheck disable=SC2086  # options
        "$PYTHON" -m sspo_verl.tools.preflight --address "$PREFLIGHT_ADDRESS" ${PREFLIGHT_ARGS:-} -- "${all[@]}" || return
      else
        "$PYTHON" -m sspo_verl.tools.preflight --local -- "${all[@]}" || return
      fi
    fi
    # shellcheck disable=SC2086  # the launcher is a command line
    $launcher "${all[@]}"
  fi
}
