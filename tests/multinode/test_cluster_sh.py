"""recipes/multinode/cluster.sh without a cluster: the auth token's setup on each role, and the failures that come
before any cluster answers (no job submitted, nobody listening). The same functions run on the namespaced
clusters in test_ray_cluster.py and test_slurm.py."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import RECIPES, VENV_BIN

CLUSTER_SH = RECIPES / "multinode" / "cluster.sh"


def sh(script: str, home: Path, **env) -> subprocess.CompletedProcess:
    """`script` in bash with cluster.sh sourced, HOME=home, and no auth settings from the caller's environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    return subprocess.run(["bash", "-c", f'source "$0"; {script}', str(CLUSTER_SH)], capture_output=True, text=True,
                          timeout=120, env={**base, "HOME": str(home), "PATH": f"{VENV_BIN}:{base['PATH']}", **env})


def test_the_head_creates_a_private_token_once_and_prints_only_its_fingerprint(tmp_path):
    out = sh('ray_auth_setup head && echo "mode=$RAY_AUTH_MODE path=$RAY_AUTH_TOKEN_PATH"', tmp_path)
    path = tmp_path / ".ray" / "auth_token"
    assert out.returncode == 0, out.stderr
    token = path.read_text()
    assert len(token) == 64 and int(token, 16) >= 0  # 32 random bytes in hex
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    fingerprint = hashlib.sha256(token.encode()).hexdigest()[:12]
    assert out.stdout.splitlines() == [f"ray: generated a new auth token at {path}",
                                       f"ray: token auth on, token {path} (sha256 {fingerprint})",
                                       f"mode=token path={path}"]
    again = sh("ray_auth_setup head", tmp_path)
    assert again.returncode == 0 and "generated" not in again.stdout and path.read_text() == token
    assert token not in out.stdout + out.stderr + again.stdout + again.stderr


def test_an_existing_folder_keeps_its_mode_and_the_new_token_is_still_private(tmp_path):
    shared = tmp_path / "project"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    out = sh("ray_auth_setup head", tmp_path, RAY_AUTH_TOKEN_PATH=str(shared / "ray_token"))
    assert out.returncode == 0, out.stderr
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755
    assert stat.S_IMODE((shared / "ray_token").stat().st_mode) == 0o600


@pytest.mark.parametrize("role", ["node", "client"])
def test_a_node_or_client_without_the_token_fails_naming_the_path_and_how_to_bring_it(tmp_path, role):
    out = sh(f"ray_auth_setup {role}", tmp_path)
    assert out.returncode == 1 and not (tmp_path / ".ray").exists()
    assert f"no Ray auth token at {tmp_path}/.ray/auth_token on " in out.stderr
    assert "the head creates it" in out.stderr and f"scp -p <head>:{tmp_path}/.ray/auth_token" in out.stderr


def test_a_token_others_can_read_is_refused_with_the_chmod_fix(tmp_path):
    path = tmp_path / "token"
    path.write_text("ab" * 32)
    path.chmod(0o644)  # what `ray get-auth-token --generate` leaves
    out = sh("ray_auth_setup node", tmp_path, RAY_AUTH_TOKEN_PATH=str(path))
    assert out.returncode == 1
    assert f"the Ray auth token {path} has mode 644 and owner uid {os.getuid()}: it must be yours and private" \
        in out.stderr and f"chmod 600 {path}" in out.stderr
    assert "ab" * 32 not in out.stdout + out.stderr


def test_an_empty_token_is_refused(tmp_path):
    path = tmp_path / "token"
    path.touch(mode=0o600)
    out = sh("ray_auth_setup client", tmp_path, RAY_AUTH_TOKEN_PATH=str(path))
    assert out.returncode == 1 and f"the Ray auth token {path} is empty" in out.stderr


def test_a_token_in_the_environment_is_refused_as_it_would_reach_every_process(tmp_path):
    out = sh("ray_auth_setup head", tmp_path, RAY_AUTH_TOKEN="cd" * 32)
    assert out.returncode == 1 and "RAY_AUTH_TOKEN is set" in out.stderr and "cd" * 32 not in out.stderr
    assert not (tmp_path / ".ray").exists()


def test_auth_off_is_explicit_and_warns(tmp_path):
    out = sh('ray_auth_setup head && echo "mode=$RAY_AUTH_MODE"', tmp_path, RAY_AUTH="off")
    assert out.returncode == 0 and out.stdout.strip() == "mode=disabled"
    assert "WARNING: RAY_AUTH=off" in out.stderr and "can run code on every node" in out.stderr
    assert not (tmp_path / ".ray").exists()
    bad = sh("ray_auth_setup head", tmp_path, RAY_AUTH="no")
    assert bad.returncode == 1 and "RAY_AUTH=no: use RAY_AUTH=on (the default) or RAY_AUTH=off" in bad.stderr


def test_missing_words():
    out = sh('missing_words "10.0.0.1 10.0.0.2 10.0.0.3" "10.0.0.3 10.0.0.1"; missing_words "a" "a b"', Path("/tmp"))
    assert out.stdout.splitlines() == ["10.0.0.2", ""]


def test_a_command_that_fails_before_submitting_is_reported_without_asking_the_cluster(tmp_path):
    out = sh('ray_job_watched 127.0.0.1 bash -c "echo preflight says no; exit 1"', tmp_path)
    assert out.returncode == 1 and out.stdout == "preflight says no\n"
    assert out.stderr.strip() == "submit FAILED: no job was submitted (exit 1, see above)"


@pytest.mark.slow
def test_waiting_for_nodes_where_nothing_listens_fails_after_the_timeout_with_the_count_and_address(tmp_path):
    start = time.monotonic()
    out = sh("ray_wait_nodes 127.0.0.1:1 2 4", tmp_path, RAY_DASHBOARD_PORT="1", RAY_CALL_TIMEOUT_S="5")
    took = time.monotonic() - start
    assert out.returncode == 1
    assert out.stderr.startswith("ray: only 0 of 2 nodes alive at 127.0.0.1:1 after 4s: its dashboard "
                                 "http://127.0.0.1:1 never listed the nodes (last try: "), out.stderr
    assert took < 4 + 5 + 5  # the wait, at most one call's timeout, slack


def test_a_gate_module_file_goes_into_the_jobs_runtime_env_as_a_package_of_its_own(tmp_path):
    """`ray job submit` uploads folders only (Ray 2.60): the file is copied as <name>/__init__.py beside the runtime
    env, so that `import my_gates` finds it on every node; without GATE_MODULE the runtime env has no py_modules."""
    import json

    my_gates = RECIPES.parent / "examples" / "custom_gate" / "my_gates.py"
    env_file = tmp_path / "env.json"
    out = sh("job_launcher 10.0.0.1", tmp_path, GATE_MODULE=str(my_gates), RUNTIME_ENV_FILE=str(env_file))
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"ray job submit --address=http://10.0.0.1:8265 --runtime-env={env_file} --\n"
    env = json.loads(env_file.read_text())
    package = tmp_path / "env.modules" / "my_gates"
    assert env["py_modules"] == [str(package)] and "NCCL_DEBUG" in env["env_vars"]
    assert (package / "__init__.py").read_text() == my_gates.read_text() and len(list(package.iterdir())) == 1
    assert "py_modules" not in json.loads(sh("runtime_env_json", tmp_path).stdout)
