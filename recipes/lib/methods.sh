# Loss lines per method: the only thing that differs between runs of one setting.
# Usage: method_overrides <method>   -> prints one Hydra override per line
#   methods: grpo, grpo_dapo (DAPO's clip-higher), gspo, gmpo, sapo, sspo, sspo_<gate>; their loss mode, clip
#   range or temperatures and aggregation live in sspo_verl/loss/methods.py, the one table the recipes, the testbed
#   and the demo read (`python -m sspo_verl.tools.method_lines <method>` prints a method's lines).
# Temperatures of sapo and sspo* (the default is SAPO's 1.0/1.05), in order of precedence:
#   a Hydra override in the recipe's arguments (actor_rollout_ref.actor.tau_pos=...): comes last, so it wins;
#   TAU_POS / TAU_NEG: the values themselves;
#   TAU_FROM_CLIP="0.2 0.28": the temperatures at which the method's gate passes half its gradient at a PPO clip
#     range's edges, r = 1 + 0.28 for A > 0 and r = 1 - 0.2 for A <= 0 (python -m sspo_verl.tools.calibrate,
#     docs/GATES.md).
#   TAU_FROM_CLIP together with TAU_POS or TAU_NEG is an error: one of them would be silently ignored.
# On an error nothing is printed to stdout (run_recipe then stops) and the reason goes to stderr.
method_overrides() {
  TAU_POS="${TAU_POS:-}" TAU_NEG="${TAU_NEG:-}" TAU_FROM_CLIP="${TAU_FROM_CLIP:-}" \
    "${PYTHON:-python3}" -m sspo_verl.tools.method_lines "$1"
}
