# Ray cluster bring-up shared by the Ray and SLURM recipes (source it; functions only).
#   ray_auth_setup head|node|client        token auth for what follows (see below); the head creates a missing token
#   ray_head_start <node_ip> [port]        start the head on this node
#   ray_worker_start <head_ip:port> <node_ip>  join this node to the head
#                                          (RAY_START_EXEC=1: `ray start` replaces the calling shell)
#   ray_alive_nodes <head_ip:port> [timeout_s]  the alive nodes' addresses, or fail within timeout_s
#   ray_wait_nodes <head_ip:port> <n> [timeout_s]  block until n nodes are alive (sets RAY_NODES_ALIVE)
#   ray_job_watched <head_ip> <command...>  run a command that ends in `ray job submit`, watching the cluster
#   route_ip <head_ip>                     the address this node reaches the head from (what it should advertise)
#   runtime_env_json [<gate package>]      the job's runtime env: what every worker needs (a GATE_MODULE file too)
#   runtime_env_file                       where job_launcher writes it (RUNTIME_ENV_FILE)
#   job_launcher <head_ip>                 `ray job submit ... --` prefix for a payload command (writes the env file)
# The plugin must be installed (pip install sspo-verl) in the Python that Ray's workers use, on every node:
# `import verl` then loads it through its entry point. The runtime env also sets the env vars below.
#
# Token auth (Ray's RAY_AUTH_MODE=token) is on unless RAY_AUTH=off. Every Ray process, `ray job submit`, the
# preflight and the job's driver read the token from one file, RAY_AUTH_TOKEN_PATH (default ~/.ray/auth_token),
# which must be the same file (or a copy) on every node. Only its path travels in environments; the token is
# never in an argument, the runtime env or a log line, and is shown as a fingerprint (a sha256 prefix).
source "$(dirname "${BASH_SOURCE[0]}")/../lib/methods.sh"  # gate_module_file, export_gate_module_path
RAY_PORT="${RAY_PORT:-6379}"
RAY_DASHBOARD_PORT="${RAY_DASHBOARD_PORT:-8265}"
RAY_TEMP_DIR="${RAY_TEMP_DIR:-/tmp/ray}"
RAY_CALL_TIMEOUT_S="${RAY_CALL_TIMEOUT_S:-15}"  # the longest any single query of the cluster may take

ray_auth_setup() {
  local role="$1" path mode owner dir
  case "${RAY_AUTH:-on}" in
    on) ;;
    off) export RAY_AUTH_MODE=disabled
         echo "WARNING: RAY_AUTH=off: Ray token auth is off; anyone who reaches this cluster's ports (GCS $RAY_PORT," \
              "dashboard $RAY_DASHBOARD_PORT) can run code on every node" >&2
         return 0 ;;
    *) echo "RAY_AUTH=$RAY_AUTH: use RAY_AUTH=on (the default) or RAY_AUTH=off" >&2; return 1 ;;
  esac
  if [ -n "${RAY_AUTH_TOKEN:-}" ]; then
    # Ray would prefer it to the file, and every process of the cluster and of the job would inherit it
    echo "RAY_AUTH_TOKEN is set: the recipes read the token from a file, so that it is not in every process's" \
         "environment. Unset it and put the token in ${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token} (mode 600)," \
         "or point RAY_AUTH_TOKEN_PATH at its file" >&2
    return 1
  fi
  path="${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}"
  if [ ! -e "$path" ] && [ "$role" = head ]; then
    dir="$(dirname "$path")"
    [ -d "$dir" ] || (umask 077 && mkdir -p "$dir") || return 1  # a folder we create is 0700
    # 32 random bytes as hex, as `ray get-auth-token --generate` makes them; noclobber: O_EXCL, umask 077: 0600
    (umask 077 && set -o noclobber && head -c 32 /dev/urandom | od -An -vtx1 | tr -d ' \n' > "$path") || return 1
    echo "ray: generated a new auth token at $path"
  fi
  if [ ! -f "$path" ]; then
    echo "no Ray auth token at $path on $(hostname): the head creates it; give every node and the submitting" \
         "shell the same file (a shared home, or copy it: scp -p <head>:$path $path), or set RAY_AUTH_TOKEN_PATH" \
         "to where it is, or RAY_AUTH=off to run without auth" >&2
    return 1
  fi
  read -r mode owner < <(stat -L -c '%a %u' "$path")
  if [ "$owner" != "$(id -u)" ] || [ $((8#$mode & 8#077)) != 0 ]; then
    echo "the Ray auth token $path has mode $mode and owner uid $owner: it must be yours and private" \
         "(chown $(id -un) $path && chmod 600 $path)" >&2
    return 1
  fi
  if [ ! -s "$path" ]; then
    echo "the Ray auth token $path is empty: remove it and start the head again to generate one" >&2
    return 1
  fi
  export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$path"
  echo "ray: token auth on, token $path (sha256 $(ray_token_fingerprint "$path"))"
}

ray_token_fingerprint() {  # a prefix of the token's sha256: tells tokens apart, reveals nothing of the token
  sha256sum < "$1" | cut -c1-12
}

ray_head_start() {
  local ip="$1" port="${2:-$RAY_PORT}"
  ray_auth_setup head || return 1
  ${RAY_START_EXEC:+exec} ray start --head --node-ip-address="$ip" --port="$port" --dashboard-host="$ip" \
    --dashboard-port="$RAY_DASHBOARD_PORT" --temp-dir="$RAY_TEMP_DIR" ${RAY_START_ARGS:-}
}

ray_worker_start() {
  local head="$1" ip="$2"
  ray_auth_setup node || return 1
  ${RAY_START_EXEC:+exec} ray start --address="$head" --node-ip-address="$ip" --temp-dir="$RAY_TEMP_DIR" \
    ${RAY_START_ARGS:-}
}

dashboard_url() {  # <head_ip:port> -> the head's dashboard (job and state API)
  echo "http://${1%:*}:$RAY_DASHBOARD_PORT"
}

ray_alive_nodes() {
  # the addresses of the alive nodes, space-separated, from the dashboard's state API (no driver is registered);
  # on failure one line on stderr: what went wrong. The timeout bounds the whole call, Python start included.
  local head="$1" timeout="${2:-$RAY_CALL_TIMEOUT_S}" rc=0
  timeout -k 5 "$timeout" python3 -c '
import sys
try:
    from ray.util.state import list_nodes
    nodes = list_nodes(address=sys.argv[1], timeout=max(1, int(sys.argv[2]) - 3), limit=10000,
                       raise_on_missing_output=False)
except Exception as exc:
    sys.exit(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}")
print(" ".join(sorted(n.node_ip for n in nodes if n.state == "ALIVE")))' "$(dashboard_url "$head")" "$timeout" || rc=$?
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then echo "no answer within ${timeout}s" >&2; fi
  return "$rc"
}

ray_wait_nodes() {
  # fails after timeout_s (plus at most RAY_CALL_TIMEOUT_S), with the count last seen, where, and what went wrong
  local head="$1" n="$2" timeout="${3:-120}" start=$SECONDS alive="" count=0 said=-1 err="" seen_at="" out errf call
  errf="$(mktemp)"
  while :; do
    call=$((start + timeout - SECONDS))  # this query's timeout: what is left of the wait, from 5 s to RAY_CALL_TIMEOUT_S
    call=$(( call > RAY_CALL_TIMEOUT_S ? RAY_CALL_TIMEOUT_S : (call < 5 ? 5 : call) ))
    if out="$(ray_alive_nodes "$head" "$call" 2>"$errf")"; then
      alive="$out"; count=$(wc -w <<< "$alive"); err=""; seen_at=$SECONDS
      if [ "$count" -ge "$n" ]; then
        rm -f "$errf"; RAY_NODES_ALIVE="$alive"
        echo "ray: $count nodes alive"
        return 0
      fi
      [ "$count" = "$said" ] || echo "ray: $count of $n nodes alive at $head ($alive), waiting up to ${timeout}s"
      said=$count
    else
      err="$(tail -n 1 "$errf")"
    fi
    [ "$SECONDS" -lt $((start + timeout)) ] || break
    sleep 2
  done
  rm -f "$errf"
  if [ -z "$seen_at" ]; then
    echo "ray: only 0 of $n nodes alive at $head after ${timeout}s: its dashboard $(dashboard_url "$head") never" \
         "listed the nodes (last try: ${err:-?}); is the head up?" \
         "bash recipes/multinode/ray_cluster.sh head <head_ip>" >&2
  elif [ -n "$err" ]; then
    echo "ray: only $count of $n nodes alive at $head after ${timeout}s (${alive:-none}), when it last answered" \
         "$((SECONDS - seen_at))s ago; the head stopped answering since: $err" >&2
  else
    echo "ray: only $count of $n nodes alive at $head after ${timeout}s (${alive:-none}); start the missing" \
         "$((n - count)) with bash recipes/multinode/ray_cluster.sh worker ${head%:*}" >&2
  fi
  return 1
}

ray_job_watched() {
  # <head_ip> <command...>: runs the command (a recipe whose launcher is `ray job submit`), its stdout copied to
  # a log where the job's id appears. While the job runs, the cluster is asked every WATCH_NODES_S seconds:
  # a node of RAY_NODES_ALIVE that is gone stops the job (a rank that lost its peer would wait in a collective
  # until NCCL's timeout), a head that does not answer for WATCH_HEAD_S ends the command. WATCH_NODES_S=0: no
  # watch. When the command fails or the watch ended it: the job's last log lines, then its status; returns 1.
  local head_ip="$1"; shift
  local head="$head_ip:$RAY_PORT" every="${WATCH_NODES_S:-10}" quiet_max="${WATCH_HEAD_S:-60}"
  local log pid rc=0 id="" reason="" now gone next_poll=0 answered=$SECONDS
  log="$(mktemp "${TMPDIR:-/tmp}/sspo-submit.XXXXXX")"
  set -m  # the command in its own process group: Ctrl-C is passed on to it, and it can be ended as a whole
  ( set -o pipefail; "$@" | tee "$log" ) &
  pid=$!
  set +m
  trap 'kill -INT -- "-$pid" 2>/dev/null' INT
  trap 'kill -TERM -- "-$pid" 2>/dev/null' TERM
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if [ -z "$id" ]; then
      id="$(sed -n "s/.*Job '\(raysubmit_[A-Za-z0-9]*\)' submitted successfully.*/\1/p" "$log" | head -n 1)"
      next_poll=$((SECONDS + every)); answered=$SECONDS
    fi
    { [ -n "$id" ] && [ -z "$reason" ] && [ "$every" -gt 0 ] && [ "$SECONDS" -ge "$next_poll" ]; } || continue
    next_poll=$((SECONDS + every))
    if now="$(ray_alive_nodes "$head" 2>/dev/null)"; then
      answered=$SECONDS
      gone="$(missing_words "${RAY_NODES_ALIVE:-}" "$now")"
      [ -n "$gone" ] || continue
      reason="$(wc -w <<< "$gone") of $(wc -w <<< "$RAY_NODES_ALIVE") nodes left the cluster at $head while job $id"
      reason+=" ran ($gone); $(wc -w <<< "$now") alive ($now). The job was stopped"
      echo "submit: $reason" >&2
      timeout -k 5 "$((RAY_CALL_TIMEOUT_S * 2))" ray job stop --address="$(dashboard_url "$head")" "$id" \
        >/dev/null 2>&1 || kill -TERM -- "-$pid" 2>/dev/null
    elif [ $((SECONDS - answered)) -ge "$quiet_max" ]; then
      reason="the head at $head has not answered for $((SECONDS - answered))s while job $id ran; its state is unknown"
      echo "submit: $reason" >&2
      kill -TERM -- "-$pid" 2>/dev/null
    fi
  done
  wait "$pid" || rc=$?
  trap - INT TERM
  rm -f "$log"
  if [ "$rc" = 0 ] && [ -z "$reason" ]; then return 0; fi
  if [ -z "$id" ]; then
    echo "submit FAILED: no job was submitted (exit $rc, see above)" >&2
    return 1
  fi
  if [ -z "$reason" ]; then  # the job failed by itself (ray job submit exits 1 then): was a node lost meanwhile?
    reason="ray job submit exited $rc"
    if now="$(ray_alive_nodes "$head" 2>/dev/null)"; then
      gone="$(missing_words "${RAY_NODES_ALIVE:-}" "$now")"
      [ -z "$gone" ] || reason+="; nodes that left the cluster meanwhile: $gone; $(wc -w <<< "$now") alive ($now)"
    fi
  fi
  echo "submit FAILED: job $id: $reason" >&2
  ray_job_report "$head" "$id" >&2
  return 1
}

missing_words() {  # words of $1 that are not in $2
  local w out=""
  for w in $1; do [[ " $2 " == *" $w "* ]] || out+="${out:+ }$w"; done
  echo "$out"
}

ray_job_report() {
  # <head_ip:port> <job id>: the job's last JOB_LOG_LINES (20) log lines, then its status and message
  timeout -k 5 "$((RAY_CALL_TIMEOUT_S * 2))" python3 -c '
import sys
from ray.job_submission import JobSubmissionClient
url, job, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    client = JobSubmissionClient(url)
    info, logs = client.get_job_info(job), client.get_job_logs(job)
except Exception as exc:
    sys.exit(f"== job {job}: status unknown, {url} did not answer ({type(exc).__name__}: {exc}) ==")
lines = logs.rstrip("\n").splitlines()[-n:]
print(f"== the last {len(lines)} lines of job {job}\x27s log ==")
print("\n".join(lines))
message = (info.message or "").split(", last available logs")[0].strip()  # the logs follow in the message
print(f"== job {job}: {info.status.value}" + (f" ({message})" if message else "") + " ==")
if not info.status.is_terminal():
    print(f"== it goes on on the cluster; to stop it: ray job stop --address={url} {job} ==")' \
    "$(dashboard_url "$1")" "$2" "${JOB_LOG_LINES:-20}" \
    || echo "== job $2: status unknown (no answer from $(dashboard_url "$1") within $((RAY_CALL_TIMEOUT_S * 2))s) ==" >&2
}

route_ip() {
  # the source address of this node's route to the head: reachable from the head, unlike what
  # `hostname --ip-address` gives on hosts whose /etc/hosts maps the hostname to 127.0.1.1
  python3 -c 'import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect((sys.argv[1], 9)); print(s.getsockname()[0])' "$1"
}

runtime_env_json() {
  # [<gate package>]: env vars every worker process needs, and the gate package (job_launcher makes it) in
  # py_modules: Ray uploads it once and every process of the job, on every node, can import it (no shared
  # filesystem needed; an installed module named by GATE_MODULE must be on every node instead).
  # Add "pip": ["sspo-verl"] here if your cluster installs per job.
  # Never the auth token: Ray's processes find it through RAY_AUTH_TOKEN_PATH, which they inherit.
  local package="${1:-}" modules=""
  if [ -n "$package" ]; then
    package="${package//\\/\\\\}"; package="${package//\"/\\\"}"  # as a JSON string
    modules=", \"py_modules\": [\"$package\"]"
  fi
  printf '{"env_vars": {"TOKENIZERS_PARALLELISM": "true", "NCCL_DEBUG": "WARN", "VLLM_LOGGING_LEVEL": "WARN"%s}%s}' \
    "${EXTRA_ENV_JSON:+, $EXTRA_ENV_JSON}" "$modules"
}

gate_package() {
  # <folder>: a GATE_MODULE file as the package <folder>/<name>/__init__.py, for py_modules (`ray job submit`
  # ships folders only, Ray 2.60); `import <name>` then finds it on every node. Prints its path (nothing without
  # a GATE_MODULE file).
  local file package
  file="$(gate_module_file)"
  [ -n "$file" ] || return 0
  package="$1/$(basename "$file" .py)"
  rm -rf "$package" && mkdir -p "$package" && cp "$file" "$package/__init__.py" || return 1
  echo "$package"
}

runtime_env_file() {
  echo "${RUNTIME_ENV_FILE:-${TMPDIR:-/tmp}/sspo_runtime_env.json}"
}

job_launcher() {
  # writes the runtime env to a file (JSON is YAML) so the printed command can be pasted as it is; a GATE_MODULE
  # file is copied beside it as a package, which the runtime env ships
  local head_ip="$1" env_file package
  env_file="$(runtime_env_file)"
  package="$(gate_package "${env_file%.json}.modules")" || return 1
  runtime_env_json "$package" > "$env_file"
  echo "ray job submit --address=http://$head_ip:$RAY_DASHBOARD_PORT --runtime-env=$env_file --"
}
