# Loss lines per method: the only thing that differs between runs of one setting.
# Usage: method_overrides <method>   -> prints one Hydra override per line
#   grpo          vanilla PPO clip 0.2/0.2, token-mean                 (GRPO)
#   grpo_dapo     vanilla with DAPO clip-higher 0.2/0.28, token-mean
#   gspo          sequence-ratio clip 3e-4/4e-4, seq-mean-token-mean   (GSPO)
#   gmpo          geo_mean, log-ratio clip 0.4                         (GMPO)
#   sapo          sapo, tau 1.0/1.05                                   (SAPO)
#   sspo, sspo_<gate>   SSPO, tau via TAU_POS / TAU_NEG (default 1.0/1.05), seq-mean-token-mean
method_overrides() {
  local A=actor_rollout_ref.actor
  case "$1" in
    grpo)      printf '%s\n' "$A.policy_loss.loss_mode=vanilla" "$A.clip_ratio_low=0.2" "$A.clip_ratio_high=0.2" "$A.loss_agg_mode=token-mean" ;;
    grpo_dapo) printf '%s\n' "$A.policy_loss.loss_mode=vanilla" "$A.clip_ratio_low=0.2" "$A.clip_ratio_high=0.28" "$A.loss_agg_mode=token-mean" ;;
    gspo)      printf '%s\n' "$A.policy_loss.loss_mode=gspo" "$A.clip_ratio_low=0.0003" "$A.clip_ratio_high=0.0004" "$A.loss_agg_mode=seq-mean-token-mean" ;;
    gmpo)      printf '%s\n' "$A.policy_loss.loss_mode=geo_mean" "$A.clip_ratio=0.4" "$A.clip_ratio_low=0.4" "$A.clip_ratio_high=0.4" "$A.loss_agg_mode=seq-mean-token-mean" ;;
    sapo)      printf '%s\n' "$A.policy_loss.loss_mode=sapo" "$A.tau_pos=${TAU_POS:-1.0}" "$A.tau_neg=${TAU_NEG:-1.05}" "$A.loss_agg_mode=seq-mean-token-mean" ;;
    sspo|sspo_arctan|sspo_sigmoid|sspo_erf|sspo_softsign)
               printf '%s\n' "$A.policy_loss.loss_mode=$1" "$A.tau_pos=${TAU_POS:-1.0}" "$A.tau_neg=${TAU_NEG:-1.05}" "$A.loss_agg_mode=seq-mean-token-mean" \
                             "actor_rollout_ref.model.external_lib=sspo_verl" ;;
    *) echo "unknown method '$1'; one of: grpo grpo_dapo gspo gmpo sapo sspo sspo_arctan sspo_sigmoid sspo_erf sspo_softsign" >&2; return 1 ;;
  esac
}
