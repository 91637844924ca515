"""Fixtures for the multi-node tests: namespaced nodes, their environment, a Python without the plugin, a sampler
of every process's argv and environment.

Every node is brought up by the recipes' own scripts (recipes/multinode/*), run inside the node's namespace.
Ray's state goes to per-test temp dirs (RAY_TEMP_DIR per node, HOME and TMPDIR for ~/.ray and Ray's defaults),
never to /tmp/ray or the real ~/.ray: the recipes' auth token is <workdir>/home/.ray/auth_token. Every process
is stopped by pid when the fixture ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from .leaks import ProcessSampler
from .netns import Network, NetnsUnavailable

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes"
VENV_BIN = Path(sys.executable).parent  # the interpreter running the tests: it has verl, Ray and the plugin
PLUGIN_FILES = ("sspo_verl-", "__editable__.sspo_verl-", "__editable___sspo_verl_")  # its distribution's files


def skip_or_fail(reason: str):
    """Skip where the machine cannot host the test; in CI (env CI or SSPO_REQUIRE_MULTINODE set) that is a failure."""
    pytest.fail(reason) if os.environ.get("CI") or os.environ.get("SSPO_REQUIRE_MULTINODE") else pytest.skip(reason)


@pytest.fixture(scope="module")
def workdir():
    """A short temp dir (Ray's socket paths must stay under 108 characters), removed at the end."""
    path = Path(tempfile.mkdtemp(prefix="sspo-mn-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def network():
    """An empty namespaced network; nodes are added by the test's fixtures; everything removed at the end."""
    try:
        net = Network()
    except NetnsUnavailable as exc:
        skip_or_fail(f"network namespaces unavailable: {exc}")
    try:
        yield net
    finally:
        net.close()
        _forget_test_cluster()


@pytest.fixture(scope="module")
def processes(network):
    """The argv and environment of every process of the module's nodes, sampled until the module ends."""
    sampler = ProcessSampler(network).start()
    yield sampler
    sampler.stop()


@pytest.fixture(scope="module")
def transcript():
    """Everything the module's commands printed (stdout and stderr), for the leak checks."""
    return []


def _forget_test_cluster():
    # Ray writes the address of the last cluster started here; remove it only if it is one of ours
    current = Path("/tmp/ray/ray_current_cluster")
    if current.is_file() and current.read_text().startswith("10.77.0."):
        current.unlink(missing_ok=True)


def node_env(workdir: Path, k: int, bin_dir: Path = VENV_BIN, **extra) -> dict:
    """The environment of node k's commands: its interpreter first on PATH, Ray's files under workdir."""
    env = {key: v for key, v in os.environ.items() if key != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}  # joins allowed
    (workdir / "home").mkdir(exist_ok=True)
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", PYTHON="python",
        HOME=str(workdir / "home"), TMPDIR=str(workdir), RAY_TEMP_DIR=str(workdir / f"ray{k}"),
        RAY_START_ARGS="--num-cpus=1",  # one training rank fits per node: the pool must spread them
        RAY_USAGE_STATS_ENABLED="0",
    )
    env.update(extra)
    return env


def token_path(workdir: Path) -> Path:
    """Where the recipes keep the auth token in the tests: ~/.ray/auth_token of the nodes' HOME."""
    return workdir / "home" / ".ray" / "auth_token"


def with_token(env: dict, workdir: Path) -> dict:
    """`env` for a Ray command the test runs itself (the recipes set these in ray_auth_setup)."""
    return {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_path(workdir))}


def start_ray_node(net: Network, k: int, workdir: Path, bin_dir: Path = VENV_BIN) -> subprocess.CompletedProcess:
    """Node k joins the cluster the way a user starts it: `ray_cluster.sh head|worker` on that node."""
    argv = ["bash", str(RECIPES / "multinode" / "ray_cluster.sh")]
    argv += ["head", net.ip(1)] if k == 1 else ["worker", net.ip(1)]  # a worker finds its own address
    out = net.run(k, argv, env=node_env(workdir, k, bin_dir), timeout=180)
    assert out.returncode == 0, f"ray start on node {k} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def kill_node(net: Network, k: int) -> None:
    """SIGKILL every process of node k at once: its Ray dies as in a crash, with no chance to say goodbye."""
    for pid in net.pids(k):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def python_without_plugin(dest: Path) -> Path:
    """A second environment that has everything the test venv has except the sspo-verl distribution: a venv
    whose site-packages links every entry of ours but the plugin's. Returns its bin/ (python, python3, ray)."""
    site = Path(next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(dest)], check=True)
    dest_site = dest / "lib" / site.parent.name / "site-packages"
    for entry in site.iterdir():
        if not entry.name.startswith(PLUGIN_FILES):
            (dest_site / entry.name).symlink_to(entry)
    ray_cli = dest / "bin" / "ray"
    ray_cli.write_text(f"#!{dest}/bin/python\nimport sys\nfrom ray.scripts.scripts import main\nsys.exit(main())\n")
    ray_cli.chmod(0o755)
    return dest / "bin"
