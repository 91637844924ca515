# Loss lines per method: the only thing that differs between runs of one setting.
# Usage: method_overrides <method>   -> prints one Hydra override per line
#   grpo          vanilla PPO clip 0.2/0.2, token-mean                 (GRPO)
#   grpo_dapo     vanilla with DAPO clip-higher 0.2/0.28, token-mean
#   gspo          sequence-ratio clip 3e-4/4e-4, seq-mean-token-mean   (GSPO)
#   gmpo          geo_mean, log-ratio clip 0.4                         (GMPO)
#   sapo          sapo, tau 1.0/1.05                                   (SAPO)
#   sspo, sspo_<gate>   SSPO, tau 1.0/1.05, seq-mean-token-mean
# Temperatures of sapo and sspo* (the default is SAPO's 1.0/1.05), in order of precedence:
#   a Hydra override in the recipe's arguments (actor_rollout_ref.actor.tau_pos=...): comes last, so it wins;
#   TAU_POS / TAU_NEG: the values themselves;
#   TAU_FROM_CLIP="0.2 0.28": the temperatures at which the method's gate passes half its gradient at a PPO clip
#     range's edges, r = 1 + 0.28 for A > 0 and r = 1 - 0.2 for A <= 0 (python -m sspo_verl.calibrate, docs/GATES.md).
#   TAU_FROM_CLIP together with TAU_POS or TAU_NEG is an error: one of them would be silently ignored.
# On an error nothing is printed to stdout (run_recipe then stops) and the reason goes to stderr.
method_overrides() {
  local A=actor_rollout_ref.actor
  case "$1" in
    grpo)      printf '%s\n' "$A.policy_loss.loss_mode=vanilla" "$A.clip_ratio_low=0.2" "$A.clip_ratio_high=0.2" "$A.loss_agg_mode=token-mean" ;;
    grpo_dapo) printf '%s\n' "$A.policy_loss.loss_mode=vanilla" "$A.clip_ratio_low=0.2" "$A.clip_ratio_high=0.28" "$A.loss_agg_mode=token-mean" ;;
    gspo)      printf '%s\n' "$A.policy_loss.loss_mode=gspo" "$A.clip_ratio_low=0.0003" "$A.clip_ratio_high=0.0004" "$A.loss_agg_mode=seq-mean-token-mean" ;;
    gmpo)      printf '%s\n' "$A.policy_loss.loss_mode=geo_mean" "$A.clip_ratio=0.4" "$A.clip_ratio_low=0.4" "$A.clip_ratio_high=0.4" "$A.loss_agg_mode=seq-mean-token-mean" ;;
    sapo|sspo|sspo_arctan|sspo_sigmoid|sspo_erf|sspo_softsign)
      local taus
      taus=$(soft_temperatures "$1") || return 1
      set -- "$1" $taus  # method tau_pos tau_neg
      printf '%s\n' "$A.policy_loss.loss_mode=$1" "$A.tau_pos=$2" "$A.tau_neg=$3" "$A.loss_agg_mode=seq-mean-token-mean"
      [ "$1" = sapo ] || printf '%s\n' "actor_rollout_ref.model.external_lib=sspo_verl" ;;
    *) echo "unknown method '$1'; one of: grpo grpo_dapo gspo gmpo sapo sspo sspo_arctan sspo_sigmoid sspo_erf sspo_softsign" >&2; return 1 ;;
  esac
}

# soft_temperatures <method> -> prints "tau_pos tau_neg" (see the precedence above)
soft_temperatures() {
  if [ -z "${TAU_FROM_CLIP:-}" ]; then
    printf '%s %s\n' "${TAU_POS:-1.0}" "${TAU_NEG:-1.05}"
    return 0
  fi
  if [ -n "${TAU_POS:-}" ] || [ -n "${TAU_NEG:-}" ]; then
    echo "TAU_FROM_CLIP=\"$TAU_FROM_CLIP\" conflicts with TAU_POS=\"${TAU_POS:-}\" TAU_NEG=\"${TAU_NEG:-}\": both set the" \
         "temperatures; unset one (TAU_FROM_CLIP derives them from a clip range, TAU_POS/TAU_NEG give them)" >&2
    return 1
  fi
  local low high extra out
  read -r low high extra <<< "$TAU_FROM_CLIP"
  if [ -z "$high" ] || [ -n "$extra" ]; then
    echo "TAU_FROM_CLIP=\"$TAU_FROM_CLIP\": give two numbers, the clip range's low and high side, e.g. TAU_FROM_CLIP=\"0.2 0.28\"" >&2
    return 1
  fi
  out=$("${PYTHON:-python3}" -m sspo_verl.calibrate --gate "$1" --clip-low "$low" --clip-high "$high") || return 1
  case "$out" in
    "tau_pos="*" tau_neg="*) ;;
    *) echo "TAU_FROM_CLIP: unexpected output of python -m sspo_verl.calibrate: '$out'" >&2; return 1 ;;
  esac
  out=${out#tau_pos=}
  printf '%s %s\n' "${out%% tau_neg=*}" "${out#* tau_neg=}"
}
