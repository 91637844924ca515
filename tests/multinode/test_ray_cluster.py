"""The Ray multi-node recipe on a real Ray cluster (network namespaces on this machine), with token auth on as
users get it by default.

The nodes are started with `recipes/multinode/ray_cluster.sh head|worker`, the job is submitted with
`ray_cluster.sh submit` (its auth setup, wait for nodes, preflight, runtime env, `ray job submit` and the watch of
the cluster while the job runs), and the only change from a user's run is the payload: PAYLOAD runs the CPU
integration update (verl's Ray TrainingWorker group, one rank per node) in place of main_ppo, or one of the
fault payloads of payload.py.

One cluster serves the whole module, so the tests run in file order: the green run; a gate module of the user's
own, shipped with the job to both nodes; the token and the refusals of a client without it; a node without the plugin; a failing job; then the faults, which use up nodes: node 2 killed
while a job runs, a new worker killed during the preflight, the head frozen while `ray_wait_nodes` waits. The
last test looks for the token in everything the module's processes held and wrote.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest

from .conftest import (RECIPES, ROOT, kill_node, node_env, python_without_plugin, start_ray_node, token_path,
                       with_token)
from .leaks import files_with_secret

pytestmark = [pytest.mark.slow, pytest.mark.multinode]

RECIPE = str(RECIPES / "deepmath_qwen2.5_7b.sh")
RAY_CLUSTER = str(RECIPES / "multinode" / "ray_cluster.sh")
HEAD = "10.77.0.1"
DASHBOARD = f"http://{HEAD}:8265"
PAYLOAD = f"python -m sspo_verl.verl_on_cpu.ray_update --address {HEAD}:6379 --ranks-per-node 1,1 --"
FAULT_PAYLOAD = f"python {ROOT / 'tests' / 'multinode' / 'payload.py'}"
MY_GATES = "examples/custom_gate/my_gates.py"  # registers the gate `algebraic` (calibrated 3.10468 / 3.43465)


@pytest.fixture(scope="module")
def cluster(network, workdir, processes, transcript):
    """Node 1 (head) and node 2 (worker), started by the recipe's own script."""
    for k in (network.add_node(), network.add_node()):
        out = start_ray_node(network, k, workdir)
        transcript.append((f"start node {k}", out.stdout + out.stderr))
    return network


@pytest.fixture(scope="module")
def token(cluster, workdir) -> str:
    return token_path(workdir).read_text()


class Background:
    """A command's stdout and stderr, read while it runs."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.out, self.err = proc, [], []
        self._readers = [threading.Thread(target=self._read, args=(stream, lines), daemon=True)
                         for stream, lines in ((proc.stdout, self.out), (proc.stderr, self.err))]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, lines):
        for line in stream:
            lines.append(line)

    def wait_for(self, text: str, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            if any(text in line for line in self.out):
                return True
            time.sleep(0.2)
        return any(text in line for line in self.out)

    def finish(self, timeout_s: float) -> tuple[int, str, str]:
        try:
            rc = self.proc.wait(timeout=timeout_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for reader in self._readers:
                reader.join(timeout=10)
        return rc, "".join(self.out), "".join(self.err)


def submit_argv(method: str = "sspo") -> list[str]:
    return ["bash", RAY_CLUSTER, "submit", HEAD, RECIPE, method]


def submit(cluster, workdir, transcript, merged: bool = False, method: str = "sspo",
           **env) -> subprocess.CompletedProcess:
    """`ray_cluster.sh submit` from the head node, as a user runs it, with the CPU payload unless PAYLOAD is given."""
    out = cluster.run(1, submit_argv(method), env=node_env(workdir, 1, **{"PAYLOAD": PAYLOAD, **env}), cwd=str(workdir),
                      timeout=600, capture_output=False, stdout=subprocess.PIPE,
                      stderr=subprocess.STDOUT if merged else subprocess.PIPE)
    transcript.append(("submit", out.stdout + (out.stderr or "")))
    return out


def submit_in_background(cluster, workdir, **env) -> Background:
    return Background(cluster.popen(1, submit_argv(), env=node_env(workdir, 1, **env), cwd=str(workdir),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))


def submitted_jobs(cluster, workdir) -> int:
    """How many jobs were submitted to the cluster (not counting drivers that only connected, like the preflight)."""
    out = cluster.run(1, ["ray", "job", "list", f"--address={DASHBOARD}"],
                      env=with_token(node_env(workdir, 1), workdir), timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.count("JobType.SUBMISSION")


@pytest.fixture(scope="module")
def submitted(cluster, workdir, transcript):
    out = submit(cluster, workdir, transcript)
    assert out.returncode == 0, f"{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    return out


@pytest.fixture(scope="module")
def result(submitted):
    lines = [line for line in submitted.stdout.splitlines() if line.startswith('{"loss_mode"')]
    assert lines, submitted.stdout[-4000:]
    return json.loads(lines[-1])


@pytest.fixture(scope="module")
def reference(workdir):
    """The same update with 2 ranks on one node (local Ray on loopback). A new local Ray writes a token to
    ~/.ray/auth_token: HOME is the test's."""
    (workdir / "reference-home").mkdir(exist_ok=True)
    out = subprocess.run([sys.executable, "-m", "sspo_verl.verl_on_cpu.ray_update", "--ranks", "2", "--loss-mode", "sspo"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                              "HOME": str(workdir / "reference-home")})
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_both_nodes_alive_and_preflight_green(submitted):
    assert "ray: 2 nodes alive" in submitted.stdout
    for ip in (HEAD, "10.77.0.2"):
        assert f"preflight: node {ip} (" in submitted.stdout and "): ok — verl 0.9.1, sspo-verl" in submitted.stdout
    assert "preflight: all 2 nodes ready for loss_mode=sspo" in submitted.stdout
    assert "preflight FAILED" not in submitted.stderr


def test_ranks_run_on_different_nodes(result):
    assert result["world_size"] == 2 and result["loss_mode"] == "sspo"
    assert len(set(result["rank_nodes"])) == 2, result["rank_nodes"]


def test_update_equals_two_ranks_on_one_node(result, reference):
    for key in ("loss", "grad_norm", "actor/pg_loss", "actor/sspo/seq_s_mean"):
        assert result["metrics"][key] == pytest.approx(reference["metrics"][key], rel=1e-5, abs=1e-7), key
    assert 0 < result["metrics"]["actor/sspo/token_w_mean"][-1] < 1  # the second epoch ran off-policy, gated


def test_a_gate_module_file_reaches_every_node_in_the_jobs_runtime_env_and_the_preflight_checks_it(
        cluster, workdir, transcript, submitted):
    """GATE_MODULE names the user's gate file once. The preflight imports it on every node, and the job's driver
    and a task on each node register the gate from the copy Ray shipped with the job (py_modules, unpacked under
    that node's own Ray temp dir), not from the file on this disk."""
    out = submit(cluster, workdir, transcript, method="sspo_algebraic", GATE_MODULE=str(ROOT / MY_GATES),
                 TAU_FROM_CLIP="0.2 0.28", PAYLOAD=f"{FAULT_PAYLOAD} gate --", PYTHONDONTWRITEBYTECODE="1")
    assert out.returncode == 0, f"{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    for k, ip in ((1, HEAD), (2, "10.77.0.2")):
        assert re.search(rf"^preflight: node {re.escape(ip)} \(.*\): ok — .*, loss_mode=sspo_algebraic registered "
                         rf"\(external_lib=my_gates\), tau_pos=3\.10468 tau_neg=3\.43465, ", out.stdout, re.M), out.stdout
        shipped = re.search(rf"^node {re.escape(ip)}: sspo_algebraic registered by (\S+)$", out.stdout, re.M)
        assert shipped and shipped.group(1).startswith(f"{workdir}/ray{k}/"), out.stdout[-3000:]
        assert "runtime_resources" in shipped.group(1) and shipped.group(1).endswith("/my_gates/__init__.py")
    driver = re.search(r"^driver: sspo_algebraic registered by (\S+)$", out.stdout, re.M)
    assert driver and driver.group(1).startswith(f"{workdir}/ray1/") and driver.group(1) != str(ROOT / MY_GATES)
    assert "preflight: all 2 nodes ready for loss_mode=sspo_algebraic" in out.stdout


def test_the_head_made_a_private_token_and_every_step_printed_only_its_fingerprint(cluster, workdir, token,
                                                                                    transcript, submitted):
    path = token_path(workdir)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.stat().st_uid == os.getuid()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700  # ~/.ray did not exist: the head made it
    assert re.fullmatch(r"[0-9a-f]{64}", token)  # 256 bits, as `ray get-auth-token --generate` makes them
    on = f"ray: token auth on, token {path} (sha256 {hashlib.sha256(token.encode()).hexdigest()[:12]})"
    outputs = {name: text for name, text in transcript if name.startswith("start node")}
    assert f"ray: generated a new auth token at {path}" in outputs["start node 1"]
    assert on in outputs["start node 1"] and on in outputs["start node 2"] and on in submitted.stdout
    assert "generated" not in outputs["start node 2"]


@pytest.fixture(scope="module")
def stranger(cluster, workdir):
    """A namespace on the cluster's network with no Ray, and a HOME whose token is not the cluster's: what an
    attacker who reaches the cluster's ports has. Returns (node number, its env, its env with its own token)."""
    k = cluster.add_node()
    home = workdir / "stranger-home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(os.urandom(32).hex())
    (home / ".ray" / "auth_token").chmod(0o600)
    # RAY_gcs_server_port_wait_time_s=1: ray.init gives up after one refused try instead of retrying for 20 s
    env = node_env(workdir, k, HOME=str(home), RAY_gcs_server_port_wait_time_s="1")
    return k, env, {**env, "RAY_AUTH_MODE": "token"}


HTTP_PROBE = """
import json, sys, urllib.request, urllib.error
url, token_file = sys.argv[1], sys.argv[2]
for page in ("/", "/api/gcs_healthz"):  # what stays open: the start page (it asks for the token), health checks
    with urllib.request.urlopen(url.split("/api/")[0] + page, timeout=20) as r:
        print(page, r.status)
for name, header in [("none", None), ("wrong", "Bearer " + "0" * 64), ("right", "Bearer " + open(token_file).read())]:
    request = urllib.request.Request(url, headers={"Authorization": header} if header else {})
    try:
        with urllib.request.urlopen(request, timeout=20) as r:
            jobs = json.loads(r.read())
            print(name, r.status, "submissions:", sum(j.get("type") == "SUBMISSION" for j in jobs))
    except urllib.error.HTTPError as e:
        print(name, e.code, e.read().decode(errors="replace").strip())
"""


def test_a_client_without_the_token_is_refused_by_gcs_job_submission_and_the_jobs_api(cluster, workdir, stranger,
                                                                                       submitted, transcript):
    k, no_token, wrong_token = stranger
    jobs_before = submitted_jobs(cluster, workdir)
    init = ["python", "-c", f"import ray; ray.init(address='{HEAD}:6379')"]
    job = ["ray", "job", "submit", f"--address={DASHBOARD}", "--", "sh", "-c", "echo pwned"]
    runs = {  # all at once: each refusal is independent of the others
        "init without token": (init, no_token), "init with a wrong token": (init, wrong_token),
        "submit without token": (job, no_token), "submit with a wrong token": (job, wrong_token),
        # the cluster's token is read from its file inside the probe, as a client with the token would
        "jobs api": (["python", "-c", HTTP_PROBE, f"{DASHBOARD}/api/jobs/", str(token_path(workdir))], no_token),
    }
    procs = {name: cluster.popen(k, argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, (argv, env) in runs.items()}
    outs = {name: proc.communicate(timeout=120) + (proc.returncode,) for name, proc in procs.items()}
    transcript.extend((name, out + err) for name, (out, err, _) in outs.items())

    for name in ("init without token", "init with a wrong token"):
        out, err, rc = outs[name]
        assert rc != 0 and "ray.exceptions.AuthenticationError: RPC error: InvalidAuthToken: Authentication token " \
                            "is missing or incorrect" in err, (name, err[-3000:])
    out, err, rc = outs["submit without token"]
    assert rc != 0 and "Authentication required: Unauthorized: Missing authentication token" in err, err[-3000:]
    out, err, rc = outs["submit with a wrong token"]
    assert rc != 0 and "Authentication failed: Forbidden: Invalid authentication token" in err, err[-3000:]
    probe = dict(line.split(" ", 1) for line in outs["jobs api"][0].splitlines())
    assert probe["none"] == "401 Unauthorized: Missing authentication token", outs["jobs api"]
    assert probe["wrong"] == "403 Forbidden: Invalid authentication token"
    assert probe["right"] == f"200 submissions: {jobs_before}"  # the token opens what was refused
    assert probe["/"] == "200" and probe["/api/gcs_healthz"] == "200"  # and these stay open (docs/MULTINODE.md)
    assert submitted_jobs(cluster, workdir) == jobs_before  # "pwned" never ran


def test_node_without_the_plugin_fails_the_preflight_and_nothing_is_submitted(cluster, workdir, submitted, transcript):
    jobs_before = submitted_jobs(cluster, workdir)
    bin_dir = python_without_plugin(workdir / "venv-no-plugin")
    k = cluster.add_node()
    try:
        start_ray_node(cluster, k, workdir, bin_dir=bin_dir)
        out = submit(cluster, workdir, transcript, NNODES="3")
        assert out.returncode != 0
        bad = f"preflight FAILED: node {cluster.ip(k)} ({cluster.hostname(k)}): the sspo-verl plugin is not installed"
        assert bad in out.stderr, out.stderr[-4000:]
        assert f"fix: {bin_dir}/python -m pip install 'sspo-verl==" in out.stderr
        assert "preflight FAILED: 1 of 3 nodes cannot train loss_mode=sspo; nothing was launched" in out.stderr
        assert f"preflight: node {HEAD} (" in out.stdout and "preflight: node 10.77.0.2 (" in out.stdout  # still ok
        assert "Running entrypoint" not in out.stdout and submitted_jobs(cluster, workdir) == jobs_before
        assert out.stderr.rstrip().endswith("submit FAILED: no job was submitted (exit 1, see above)")
    finally:
        cluster.stop_node(k)


def test_a_failing_job_fails_submit_and_its_output_ends_with_its_last_log_lines_and_status(cluster, workdir,
                                                                                           transcript, submitted):
    out = submit(cluster, workdir, transcript, merged=True, PAYLOAD=f"{FAULT_PAYLOAD} fail --", PREFLIGHT="0")
    assert out.returncode == 1, out.stdout[-4000:]
    job = re.search(r"Job '(raysubmit_\w+)' submitted successfully", out.stdout).group(1)
    # `ray job submit` itself exits 1 for a failed job, and the recipe passes that on
    assert f"submit FAILED: job {job}: ray job submit exited 1" in out.stdout
    tail = out.stdout.rstrip("\n").splitlines()[-22:]
    assert tail == [f"== the last 20 lines of job {job}'s log =="] + [f"payload line {i}" for i in range(11, 31)] + \
        [f"== job {job}: FAILED (Job entrypoint command failed with exit code 3) =="], "\n".join(tail)


def test_a_worker_killed_while_the_job_runs_stops_it_and_fails_submit_naming_the_node(cluster, workdir, transcript,
                                                                                      submitted, record_property):
    # the payload's head rank waits as in a collective whose peer is gone: only the recipe's watch can end it
    run = submit_in_background(cluster, workdir, NNODES="2", PREFLIGHT="0", WATCH_NODES_S="3",
                               PAYLOAD=f"{FAULT_PAYLOAD} hold --")
    assert run.wait_for("holding on 2 nodes: 10.77.0.1 10.77.0.2", 180), "".join(run.out + run.err)[-4000:]
    kill_node(cluster, 2)
    killed = time.monotonic()
    rc, out, err = run.finish(timeout_s=120)
    took = time.monotonic() - killed
    transcript.append(("submit, node killed during the job", out + err))
    job = re.search(r"Job '(raysubmit_\w+)' submitted successfully", out).group(1)
    assert rc == 1, err[-4000:]
    assert (f"submit: 1 of 2 nodes left the cluster at {HEAD}:6379 while job {job} ran (10.77.0.2); 1 alive "
            f"({HEAD}). The job was stopped") in err, err[-4000:]
    last = err.rstrip("\n").splitlines()
    assert last[-1] == f"== job {job}: STOPPED (Job was intentionally stopped.) ==", "\n".join(last[-25:])
    assert f"== the last " in "\n".join(last[-25:]) and "holding on 2 nodes" in "\n".join(last[-25:])
    record_property("seconds_to_fail", round(took, 1))
    assert took < 60, took


def test_a_worker_killed_during_the_preflight_fails_it_within_60s_naming_the_node(cluster, workdir, transcript,
                                                                                  submitted, record_property):
    k = cluster.add_node()
    start_ray_node(cluster, k, workdir)
    jobs_before = submitted_jobs(cluster, workdir)
    # node 2 is gone (the test before killed it, and Ray knows): the cluster is the head and node k
    run = submit_in_background(cluster, workdir, NNODES="2", PAYLOAD=f"{FAULT_PAYLOAD} fail --")
    deadline = time.monotonic() + 180
    while not any(argv.startswith("ray::check_node") for argv in cluster.argvs(k).values()):  # its check runs
        assert run.proc.poll() is None and time.monotonic() < deadline, "".join(run.out + run.err)[-4000:]
        time.sleep(0.05)
    kill_node(cluster, k)
    killed = time.monotonic()
    rc, out, err = run.finish(timeout_s=120)
    took = time.monotonic() - killed
    transcript.append(("submit, node killed in the preflight", out + err))
    assert rc != 0
    assert (f"preflight FAILED: node {cluster.ip(k)} ({cluster.hostname(k)}): Ray lost this node during the preflight"
            in err), err[-4000:]
    assert "preflight FAILED: 1 of 2 nodes cannot train loss_mode=sspo; nothing was launched" in err
    record_property("seconds_to_fail", round(took, 1))
    assert took < 60, took
    assert submitted_jobs(cluster, workdir) == jobs_before


def test_a_head_that_stops_answering_fails_the_wait_with_the_count_it_saw_and_the_address(
        cluster, workdir, stranger, transcript, record_property):
    k, _, _ = stranger  # a shell on another machine, this time with the cluster's token (HOME of the nodes)
    # more nodes than are left: the wait goes on until the head stops answering (the node killed in the test
    # before may still count as alive, so the count is read from the wait's own progress line)
    script = f'source "$0" && ray_auth_setup client >/dev/null && ray_wait_nodes {HEAD}:6379 5 6'
    run = Background(cluster.popen(k, ["bash", "-c", script, str(RECIPES / "multinode" / "cluster.sh")],
                                   env=node_env(workdir, k, RAY_CALL_TIMEOUT_S="5"),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    head = []
    try:
        assert run.wait_for(f"nodes alive at {HEAD}:6379 (", 60), "".join(run.out + run.err)
        head = cluster.pids(1)
        for pid in head:
            os.kill(pid, signal.SIGSTOP)
        frozen = time.monotonic()
        rc, out, err = run.finish(timeout_s=60)
        took = time.monotonic() - frozen
    finally:
        for pid in head:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    transcript.append(("ray_wait_nodes, head frozen", out + err))
    count, alive = re.findall(rf"ray: (\d) of 5 nodes alive at {HEAD}:6379 \(([\d. ]+)\), waiting up to 6s", out)[-1]
    assert rc == 1 and HEAD in alive.split()
    assert f"ray: only {count} of 5 nodes alive at {HEAD}:6379 after 6s ({alive}), when it last answered" in err, err
    assert "the head stopped answering since: " in err
    record_property("seconds_to_fail", round(took, 1))
    assert took < 6 + 5 + 10, took  # the wait, one call's timeout, and slack: no call hangs


def test_the_token_is_in_no_process_argv_environment_file_or_output(cluster, workdir, token, processes, transcript):
    processes.sample()
    assert processes.processes > 40, processes.processes  # gcs, raylets, dashboard, agents, workers, drivers, CLIs
    assert processes.with_secret(token) == []
    read, found = files_with_secret(token, [workdir], skip=(token_path(workdir), workdir / "venv-no-plugin"))
    assert read > 100 and found == [], found  # Ray's logs of every node, the runtime env, the job logs
    assert [name for name, text in transcript if token in text] == []
