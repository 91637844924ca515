#!/usr/bin/env bash
# Multi-node training on a Ray cluster you start by hand (one command per node), then one job submission.
#   on the head node:      bash recipes/multinode/ray_cluster.sh head <head_ip>
#   on every other node:   bash recipes/multinode/ray_cluster.sh worker <head_ip> [<this_node_ip>]
#   from the head node:    bash recipes/multinode/ray_cluster.sh submit <head_ip> <recipe.sh> <method> [overrides...]
# e.g. bash recipes/multinode/ray_cluster.sh submit 10.0.0.1 recipes/deepmath_qwen2.5_7b.sh sspo trainer.nnodes=2
# GATE_MODULE=path/to/my_gates.py (a gate of your own, method sspo_<gate>): a copy goes into the job's runtime env
# (py_modules, as a package of its own), so every node's processes import it; the preflight checks every node.
# submit waits for NNODES (2) nodes, runs the preflight (python -m sspo_verl.tools.preflight: every node's interpreter
# can run the method; PREFLIGHT=0 skips it), then submits the job with the runtime env of cluster.sh.
# PAYLOAD replaces the job's command (default: python3 -m verl.trainer.main_ppo), which receives the recipe's
# overrides; the bring-up, preflight and submission stay the same.
# DRY_RUN=1 with submit: compose and check the config and print the full `ray job submit` command.
# While the job runs, submit watches the cluster (WATCH_NODES_S, default every 10 s): a node that leaves it stops
# the job. submit exits 1 when the job fails, is stopped or its head stops answering, and its output then ends with
# the job's last log lines and its status.
# Token auth is on (RAY_AUTH=off turns it off): the head creates ${RAY_AUTH_TOKEN_PATH:-~/.ray/auth_token} (0600)
# when it is missing; every other node and the submitting shell need the same file (see docs/MULTINODE.md).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/cluster.sh"
usage() {
  echo "usage: bash $0 head <head_ip> | worker <head_ip> [<this_node_ip>] |" \
       "submit <head_ip> <recipe.sh> <method> [hydra overrides...]" >&2
  exit 2
}
[ $# -ge 2 ] || usage
cmd="$1"; shift
case "$cmd" in
  head)   ray_head_start "$1" ;;
  worker) head_ip="$1"
          ray_worker_start "$head_ip:$RAY_PORT" "${2:-$(route_ip "$head_ip")}" ;;
  submit)
    [ $# -ge 3 ] || usage
    head_ip="$1"; recipe="$2"; shift 2
    if [ ! -f "$recipe" ]; then
      echo "${0##*/}: error: $recipe: no such recipe; give its path, e.g. recipes/deepmath_qwen2.5_7b.sh" >&2
      exit 2
    fi
    export PREFLIGHT_ADDRESS="$head_ip:$RAY_PORT" PREFLIGHT_ARGS="--runtime-env $(runtime_env_file) --nodes ${NNODES:-2}"
    launcher="$(job_launcher "$head_ip")"
    export LAUNCHER="$launcher ${PAYLOAD:-python3 -m verl.trainer.main_ppo}"
    if [ "${DRY_RUN:-0}" = 1 ]; then exec bash "$recipe" "$@"; fi  # no cluster is asked
    source "$HERE/../lib/python.sh"
    choose_python || exit 2
    method_overrides "$1" "${@:2}" >/dev/null || exit 2  # the method and its knobs, before waiting for nodes
    ray_auth_setup client
    ray_wait_nodes "$head_ip:$RAY_PORT" "${NNODES:-2}" "${WAIT_NODES_S:-120}"
    ray_job_watched "$head_ip" bash "$recipe" "$@" ;;
  *) echo "${0##*/}: error: unknown command '$cmd': head, worker or submit" >&2; exit 2 ;;
esac
