"""The Ray multi-node recipe on a real 2-node Ray cluster (two network namespaces on this machine).

The nodes are started with `recipes/multinode/ray_cluster.sh head|worker`, the job is submitted with
`ray_cluster.sh submit` (its wait for nodes, preflight, runtime env and `ray job submit`), and the only change
from a user's run is the payload: PAYLOAD runs the CPU integration update (verl's Ray TrainingWorker group,
one rank per node) in place of main_ppo. A third node whose Python lacks the plugin then joins the same
cluster: the preflight names it and the job is never submitted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import RECIPES, ROOT, node_env, python_without_plugin, start_ray_node

pytestmark = [pytest.mark.slow, pytest.mark.multinode]

RECIPE = str(RECIPES / "deepmath_qwen2.5_7b.sh")
HEAD = "10.77.0.1"
PAYLOAD = f"python -m sspo_verl.testbed.ray_update --address {HEAD}:6379 --ranks-per-node 1,1 --"


@pytest.fixture(scope="module")
def cluster(network, workdir):
    """Node 1 (head) and node 2 (worker), started by the recipe's own script."""
    for k in (network.add_node(), network.add_node()):
        start_ray_node(network, k, workdir)
    return network


def submit(cluster, workdir, **env) -> subprocess.CompletedProcess:
    """`ray_cluster.sh submit` from the head node, as a user runs it, with the CPU payload."""
    argv = ["bash", str(RECIPES / "multinode" / "ray_cluster.sh"), "submit", HEAD, RECIPE, "sspo"]
    return cluster.run(1, argv, env=node_env(workdir, 1, PAYLOAD=PAYLOAD, **env), cwd=str(workdir), timeout=600)


def submitted_jobs(cluster, workdir) -> int:
    """How many jobs were submitted to the cluster (not counting drivers that only connected, like the preflight)."""
    out = cluster.run(1, ["ray", "job", "list", f"--address=http://{HEAD}:8265"], env=node_env(workdir, 1), timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.count("JobType.SUBMISSION")


@pytest.fixture(scope="module")
def submitted(cluster, workdir):
    out = submit(cluster, workdir)
    assert out.returncode == 0, f"{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    return out


@pytest.fixture(scope="module")
def result(submitted):
    lines = [line for line in submitted.stdout.splitlines() if line.startswith('{"loss_mode"')]
    assert lines, submitted.stdout[-4000:]
    return json.loads(lines[-1])


@pytest.fixture(scope="module")
def reference():
    """The same update with 2 ranks on one node (local Ray on loopback)."""
    out = subprocess.run([sys.executable, "-m", "sspo_verl.testbed.ray_update", "--ranks", "2", "--loss-mode", "sspo"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
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


def test_node_without_the_plugin_fails_the_preflight_and_nothing_is_submitted(cluster, workdir, submitted):
    jobs_before = submitted_jobs(cluster, workdir)
    assert jobs_before == 1  # the green run's
    bin_dir = python_without_plugin(workdir / "venv-no-plugin")
    k = cluster.add_node()
    try:
        start_ray_node(cluster, k, workdir, bin_dir=bin_dir)
        out = submit(cluster, workdir, NNODES="3")
        assert out.returncode != 0
        bad = f"preflight FAILED: node {cluster.ip(k)} ({cluster.hostname(k)}): the sspo-verl plugin is not installed"
        assert bad in out.stderr, out.stderr[-4000:]
        assert f"fix: {bin_dir}/python -m pip install 'sspo-verl==" in out.stderr
        assert "preflight FAILED: 1 of 3 nodes cannot train loss_mode=sspo; nothing was launched" in out.stderr
        assert f"preflight: node {HEAD} (" in out.stdout and "preflight: node 10.77.0.2 (" in out.stdout  # still ok
        assert "Running entrypoint" not in out.stdout and submitted_jobs(cluster, workdir) == jobs_before
    finally:
        cluster.stop_node(k)
