"""The SLURM recipe on a real 2-node SLURM cluster (Debian's slurm-wlm and munge, one slurmd per namespace).

`sbatch recipes/multinode/slurm.sbatch <recipe> sspo` is submitted as a user submits it, with the GPU directives
overridden on the command line (sbatch options beat #SBATCH lines) and PAYLOAD set to the CPU integration
update. What is under test is the script's bring-up: the Ray head on the first allocated node and a worker on
the second through `srun`, the preflight, then the payload with one training rank per node.
"""

from __future__ import annotations

import json

import pytest

from .conftest import RECIPES, ROOT, node_env, skip_or_fail
from .slurm import LocalSlurm, missing_binaries

pytestmark = [pytest.mark.slow, pytest.mark.multinode]

HEAD = "10.77.0.1"
PAYLOAD = f"python -m sspo_verl.testbed.ray_update --address {HEAD}:6379 --ranks-per-node 1,1 --"


@pytest.fixture(scope="module")
def slurm(network, workdir):
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


@pytest.fixture(scope="module")
def job(slurm, network, workdir):
    """The recipe's sbatch script with the CPU payload, waited for; returns (final state, job output)."""
    argv = ["--nodes=2", "--gpus-per-node=0", "--cpus-per-task=1", f"--output={workdir}/sspo-%j.out",
            str(RECIPES / "multinode" / "slurm.sbatch"), str(RECIPES / "deepmath_qwen2.5_7b.sh"), "sspo"]
    job_id = slurm.sbatch(argv, cwd=ROOT, env=node_env(workdir, 1, PAYLOAD=PAYLOAD, WAIT_NODES_S="90"))
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
