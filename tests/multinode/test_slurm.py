"""The SLURM recipe on a real 2-node SLURM cluster (Debian's slurm-wlm and munge, one slurmd per namespace), with
token auth on as users get it by default.

`sbatch recipes/multinode/slurm.sbatch <recipe> sspo` is submitted as a user submits it, with the GPU directives
overridden on the command line (sbatch options beat #SBATCH lines) and PAYLOAD set to the CPU integration
update. What is under test is the script's bring-up: the token, the Ray head on the first allocated node and a
worker on the second through `srun`, the preflight, then the payload with one training rank per node. A second
job, with a gate of the user's own (GATE_MODULE) that its preflight checks on both nodes, holds the cluster until
`scancel`, after which no Ray process may be left on any node. The last test looks
for the token in everything the module's processes held and wrote.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
import time

import pytest

from .conftest import RECIPES, ROOT, node_env, skip_or_fail, token_path
from .leaks import files_with_secret
from .slurm import LocalSlurm, missing_binaries

pytestmark = [pytest.mark.slow, pytest.mark.multinode]

HEAD = "10.77.0.1"
PAYLOAD = f"python -m sspo_verl.verl_on_cpu.ray_update --address {HEAD}:6379 --ranks-per-node 1,1 --"
HOLD_PAYLOAD = f"python {ROOT / 'tests' / 'multinode' / 'payload.py'} hold --"
MY_GATES = "examples/custom_gate/my_gates.py"  # registers the gate `algebraic` (calibrated 3.10468 / 3.43465)
SLURM_DAEMONS = ("slurmd", "slurmctld", "slurmscriptd", "slurmstepd")  # may stay on a node when its jobs are gone


@pytest.fixture(scope="module")
def slurm(network, workdir, processes):
    missing = missing_binaries()
    if missing:
        skip_or_fail(f"SLURM not installed (missing {', '.join(missing)}): apt-get install -y slurm-wlm munge")
    nodes = [network.add_node(), network.add_node()]
    cluster = LocalSlurm(network, workdir, nodes)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


def sbatch_argv(workdir, method: str = "sspo") -> list[str]:
    return ["--nodes=2", "--gpus-per-node=0", "--cpus-per-task=1", f"--output={workdir}/sspo-%j.out",
            str(RECIPES / "multinode" / "slurm.sbatch"), str(RECIPES / "deepmath_qwen2.5_7b.sh"), method]


@pytest.fixture(scope="module")
def job(slurm, network, workdir):
    """The recipe's sbatch script with the CPU payload, waited for; returns (final state, job output)."""
    job_id = slurm.sbatch(sbatch_argv(workdir), cwd=ROOT, env=node_env(workdir, 1, PAYLOAD=PAYLOAD, WAIT_NODES_S="90"))
    state = slurm.wait(job_id, timeout_s=600)
    output = (workdir / f"sspo-{job_id}.out").read_text(errors="replace")
    return state, output


def test_job_completes(job, slurm):
    state, output = job
    assert state == "COMPLETED", f"{output[-6000:]}\n{slurm.logs()}"


def test_head_on_first_node_worker_on_second_and_preflight_green(job, network):
    _, output = job
    assert f"head: {network.hostname(1)} ({HEAD}), nodes: {network.hostname(1)} {network.hostname(2)}" in output
    assert "ray: 2 nodes alive" in output
    for k in (1, 2):
        assert f"preflight: node {network.ip(k)} ({network.hostname(k)}): ok — " in output, output[-6000:]
    assert "preflight: all 2 nodes ready for loss_mode=sspo" in output


def test_update_ran_on_both_nodes_and_logged_gate_metrics(job):
    _, output = job
    lines = [line for line in output.splitlines() if line.startswith('{"loss_mode"')]
    assert lines, output[-6000:]
    result = json.loads(lines[-1])
    assert result["world_size"] == 2 and len(set(result["rank_nodes"])) == 2
    metrics = result["metrics"]
    for key in ("actor/sspo/token_w_mean", "actor/sspo/seq_s_mean", "actor/pg_clipfrac", "grad_norm", "loss"):
        assert key in metrics, key
    assert 0 < metrics["actor/sspo/token_w_mean"][-1] < 1  # the off-policy epoch is gated


def test_the_batch_script_made_a_private_token_on_the_shared_home_and_every_node_used_it(job, workdir):
    _, output = job
    path = token_path(workdir)
    token = path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    on = f"ray: token auth on, token {path} (sha256 {hashlib.sha256(token.encode()).hexdigest()[:12]})"
    assert output.count(f"ray: generated a new auth token at {path}") == 1
    assert output.count(on) == 3  # the batch script, the head's step, the worker's step


def ray_processes(network, k: int) -> dict[int, str]:
    """Node k's processes other than SLURM's own daemons: the Ray daemons, workers and drivers of a job."""
    return {pid: argv for pid, argv in network.argvs(k).items()
            if argv and os.path.basename(argv.lstrip(": ").split()[0]) not in SLURM_DAEMONS}


def test_scancel_leaves_no_ray_process_on_any_node_within_30s(slurm, network, workdir, job, record_property):
    """The job holds the cluster until scancel. It runs a gate of the user's own (GATE_MODULE, a file in the
    repository, as users keep theirs on the filesystem SLURM's nodes share): its preflight imports it on both
    nodes, whose Ray was started by the batch script's srun steps."""
    assert not ray_processes(network, 1) and not ray_processes(network, 2)  # the first job left nothing either
    job_id = slurm.sbatch(sbatch_argv(workdir, "sspo_algebraic"), cwd=ROOT,
                          env=node_env(workdir, 1, PAYLOAD=HOLD_PAYLOAD, WAIT_NODES_S="90", GATE_MODULE=MY_GATES,
                                       TAU_FROM_CLIP="0.2 0.28", PYTHONDONTWRITEBYTECODE="1"))
    output = workdir / f"sspo-{job_id}.out"
    deadline = time.monotonic() + 240
    while "holding on 2 nodes" not in (output.read_text(errors="replace") if output.exists() else ""):
        assert time.monotonic() < deadline, f"{output.read_text(errors='replace')[-6000:]}\n{slurm.logs()}"
        time.sleep(0.5)
    text = output.read_text(errors="replace")
    for k in (1, 2):
        assert (f"preflight: node {network.ip(k)} ({network.hostname(k)}): ok — " in text and
                "loss_mode=sspo_algebraic registered (external_lib=my_gates), tau_pos=3.10468 tau_neg=3.43465" in
                text.split(f"preflight: node {network.ip(k)} ", 1)[1].splitlines()[0]), text[-6000:]
    assert all(ray_processes(network, k) for k in (1, 2))
    # the cluster this job runs refuses a client without the token (dashboard's jobs API from the other node)
    probe = network.run(2, ["python", "-c", "import urllib.request, urllib.error, sys\ntry:\n"
                            f"    urllib.request.urlopen('http://{HEAD}:8265/api/jobs/', timeout=20)\n"
                            "except urllib.error.HTTPError as e:\n    print(e.code, e.read().decode())"],
                        env=node_env(workdir, 2), timeout=60)
    assert probe.stdout.strip() == "401 Unauthorized: Missing authentication token", probe.stdout + probe.stderr

    network.run(1, ["scancel", job_id], env=slurm.env(), timeout=30)
    cancelled = time.monotonic()
    left = {}
    while time.monotonic() - cancelled < 30:
        left = {k: ray_processes(network, k) for k in (1, 2)}
        if not any(left.values()):
            break
        time.sleep(0.5)
    took = time.monotonic() - cancelled
    record_property("seconds_to_no_ray_process", round(took, 1))
    assert not any(left.values()), f"still running {took:.0f} s after scancel: {left}"
    assert slurm.wait(job_id, timeout_s=60) == "CANCELLED"


def test_the_token_is_in_no_process_argv_environment_file_or_output(job, workdir, processes):
    token = token_path(workdir).read_text()
    processes.sample()
    assert processes.processes > 30, processes.processes  # slurm daemons, steps, Ray daemons, workers, drivers
    assert processes.with_secret(token) == []
    read, found = files_with_secret(token, [workdir], skip=(token_path(workdir),))
    assert read > 100 and found == [], found  # the job outputs, SLURM's logs, Ray's logs of both nodes
    assert not re.search(token, job[1])
