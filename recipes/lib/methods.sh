# Loss lines per method: the only thing that differs between runs of one setting.
# Usage: method_overrides <method> [the recipe's arguments...]   -> prints one Hydra override per line
#   methods: the table in sspo_verl/loss/methods.py (`python -m sspo_verl.tools.method_lines --list` prints them),
#   which the recipes, the testbed and the demo read; plus sspo_<gate> for each gate that your GATE_MODULE
#   registers. `python -m sspo_verl.tools.method_lines <method>` prints a method's lines.
# Knobs (environment; the rules in full: sspo_verl/tools/method_lines.py):
#   GATE_MODULE=path/to/my_gates.py (or an installed module's name): a gate module of your own, named once. Every
#     verl process imports it (it becomes actor_rollout_ref.model.external_lib; run.sh puts a file's folder on
#     PYTHONPATH, the multi-node recipes ship the file with the job), the preflight checks it on every node, and
#     each gate it registers with sspo_verl.register_gate makes sspo_<gate> a method.
#   Temperatures of sapo and sspo* (the default is SAPO's 1.0/1.05), in order of precedence:
#   a Hydra override in the recipe's arguments (actor_rollout_ref.actor.tau_pos=...): comes last, so it wins;
#   TAU_POS / TAU_NEG: the values themselves;
#   TAU_FROM_CLIP="0.2 0.28": the temperatures at which the selected loss mode's gate passes half its gradient at
#     a PPO clip range's edges, r = 1 + 0.28 for A > 0 and r = 1 - 0.2 for A <= 0 (python -m
#     sspo_verl.tools.calibrate, docs/GATES.md). The selected mode is the method's, or the one the recipe's
#     arguments set (actor_rollout_ref.actor.policy_loss.loss_mode=...); one it cannot calibrate is an error.
#   TAU_FROM_CLIP together with TAU_POS or TAU_NEG is an error: one of them would be silently ignored.
# On an error nothing is printed to stdout (run_recipe then stops) and one line goes to stderr.
method_overrides() {
  local method="$1"; shift
  TAU_POS="${TAU_POS:-}" TAU_NEG="${TAU_NEG:-}" TAU_FROM_CLIP="${TAU_FROM_CLIP:-}" GATE_MODULE="${GATE_MODULE:-}" \
    "${PYTHON:-python3}" -m sspo_verl.tools.method_lines "$method" -- "$@"
}

# gate_module_file: the absolute path of GATE_MODULE when it names a .py file (nothing for a module name, or a
# file that is not there: method_overrides says so)
gate_module_file() {
  local dir
  case "${GATE_MODULE:-}" in
    *.py) dir="$(cd "$(dirname "$GATE_MODULE")" 2>/dev/null && pwd)" && [ -f "$dir/${GATE_MODULE##*/}" ] \
            && echo "$dir/${GATE_MODULE##*/}" ;;
  esac
  return 0
}

# export_gate_module_path: a GATE_MODULE file's folder first on PYTHONPATH, exported, so that every process started
# from this shell can import it (the dry run, the preflight, main_ppo, and the Ray workers started on these nodes)
export_gate_module_path() {
  local file folder
  file="$(gate_module_file)"
  [ -n "$file" ] || return 0
  folder="${file%/*}"
  case ":${PYTHONPATH:-}:" in
    *":$folder:"*) ;;
    *) export PYTHONPATH="$folder${PYTHONPATH:+:$PYTHONPATH}" ;;
  esac
}
