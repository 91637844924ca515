# Ray cluster bring-up shared by the Ray and SLURM recipes (source it; functions only).
#   ray_head_start <node_ip> [port]        start the head on this node
#   ray_worker_start <head_ip:port> <node_ip>  join this node to the head
#   ray_wait_nodes <head_ip:port> <n> [timeout_s]  block until n nodes are alive
#   route_ip <head_ip>                     the address this node reaches the head from (what it should advertise)
#   runtime_env_json                       the job's runtime env: what every worker needs
#   runtime_env_file                       where job_launcher writes it (RUNTIME_ENV_FILE)
#   job_launcher <head_ip>                 `ray job submit ... --` prefix for a payload command (writes the env file)
# The plugin must be installed (pip install sspo-verl) in the Python that Ray's workers use, on every node:
# `import verl` then loads it through its entry point. The runtime env also sets the env vars below.
RAY_PORT="${RAY_PORT:-6379}"
RAY_DASHBOARD_PORT="${RAY_DASHBOARD_PORT:-8265}"
RAY_TEMP_DIR="${RAY_TEMP_DIR:-/tmp/ray}"

ray_head_start() {
  local ip="$1" port="${2:-$RAY_PORT}"
  ray start --head --node-ip-address="$ip" --port="$port" --dashboard-host="$ip" \
    --dashboard-port="$RAY_DASHBOARD_PORT" --temp-dir="$RAY_TEMP_DIR" ${RAY_START_ARGS:-}
}

ray_worker_start() {
  local head="$1" ip="$2"
  ray start --address="$head" --node-ip-address="$ip" --temp-dir="$RAY_TEMP_DIR" ${RAY_START_ARGS:-}
}

ray_wait_nodes() {
  local head="$1" n="$2" timeout="${3:-120}" alive=0 t=0
  while [ "$t" -lt "$timeout" ]; do
    alive=$(RAY_ADDRESS="$head" python3 -c "import ray; ray.init(address='$head', log_to_driver=False); print(sum(n['Alive'] for n in ray.nodes()))" 2>/dev/null | tail -1)
    [ "${alive:-0}" -ge "$n" ] && { echo "ray: $alive nodes alive"; return 0; }
    sleep 2; t=$((t + 2))
  done
  echo "ray: only ${alive:-0} of $n nodes alive after ${timeout}s" >&2
  return 1
}

route_ip() {
  # the source address of this node's route to the head: reachable from the head, unlike what
  # `hostname --ip-address` gives on hosts whose /etc/hosts maps the hostname to 127.0.1.1
  python3 -c 'import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect((sys.argv[1], 9)); print(s.getsockname()[0])' "$1"
}

runtime_env_json() {
  # env vars every worker process needs; add "pip": ["sspo-verl"] here if your cluster installs per job
  printf '{"env_vars": {"TOKENIZERS_PARALLELISM": "true", "NCCL_DEBUG": "WARN", "VLLM_LOGGING_LEVEL": "WARN"%s}}' \
    "${EXTRA_ENV_JSON:+, $EXTRA_ENV_JSON}"
}

runtime_env_file() {
  echo "${RUNTIME_ENV_FILE:-${TMPDIR:-/tmp}/sspo_runtime_env.json}"
}

job_launcher() {
  # writes the runtime env to a file (JSON is YAML) so the printed command can be pasted as it is
  local head_ip="$1" env_file
  env_file="$(runtime_env_file)"
  runtime_env_json > "$env_file"
  echo "ray job submit --address=http://$head_ip:$RAY_DASHBOARD_PORT --runtime-env=$env_file --"
}
