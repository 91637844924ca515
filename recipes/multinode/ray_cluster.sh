#!/usr/bin/env bash
# Multi-node training on a Ray cluster you start by hand (one command per node), then one job submission.
#   on the head node:      bash recipes/multinode/ray_cluster.sh head <head_ip>
#   on every other node:   bash recipes/multinode/ray_cluster.sh worker <head_ip> [<this_node_ip>]
#   from the head node:    bash recipes/multinode/ray_cluster.sh submit <head_ip> <recipe.sh> <method> [overrides...]
# e.g. bash recipes/multinode/ray_cluster.sh submit 10.0.0.1 recipes/deepmath_qwen2.5_7b.sh sspo trainer.nnodes=2
# submit waits for NNODES (2) nodes, runs the preflight (python -m sspo_verl.preflight: every node's interpreter
# can run the method; PREFLIGHT=0 skips it), then submits the job with the runtime env of cluster.sh.
# PAYLOAD replaces the job's command (default: python3 -m verl.trainer.main_ppo), which receives the recipe's
# overrides; the bring-up, preflight and submission stay the same.
# DRY_RUN=1 with submit: compose and check the config and print the full `ray job submit` command.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/cluster.sh"
cmd="${1:?usage: $0 head|worker|submit ...}"; shift
case "$cmd" in
  head)   ray_head_start "${1:?head ip}" ;;
  worker) head_ip="${1:?head ip}"
          ray_worker_start "$head_ip:$RAY_PORT" "${2:-$(route_ip "$head_ip")}" ;;
  submit)
    head_ip="${1:?head ip}"; recipe="${2:?recipe.sh}"; shift 2
    [ "${DRY_RUN:-0}" = 1 ] || ray_wait_nodes "$head_ip:$RAY_PORT" "${NNODES:-2}" "${WAIT_NODES_S:-120}"
    PREFLIGHT_ADDRESS="$head_ip:$RAY_PORT" PREFLIGHT_ARGS="--runtime-env $(runtime_env_file) --nodes ${NNODES:-2}" \
      LAUNCHER="$(job_launcher "$head_ip") ${PAYLOAD:-python3 -m verl.trainer.main_ppo}" bash "$recipe" "$@" ;;
  *) echo "unknown command '$cmd': head, worker or submit" >&2; exit 2 ;;
esac
