"""The preflight's logic without a cluster: settings from the recipe's overrides, the per-node checks run in this
interpreter, the report lines, and the failures that happen before any node is asked."""

import importlib.metadata
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, replace

import pytest
from packaging.specifiers import SpecifierSet

from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY

from sspo_verl.tools import preflight
from sspo_verl.loss.gates import GATES
from sspo_verl.loss.methods import METHODS, hydra_overrides
from sspo_verl.loss.plugin import SUPPORTED_VERL

from tests.helpers import assert_one_error_line

A = "actor_rollout_ref.actor"
SSPO = [f"{A}.policy_loss.loss_mode=sspo", f"{A}.tau_pos=1.0", f"{A}.tau_neg=1.05",
        f"{A}.loss_agg_mode=seq-mean-token-mean", "actor_rollout_ref.model.external_lib=sspo_verl"]


@pytest.fixture(scope="module")
def settings():
    return preflight.settings_from_overrides(SSPO)


def test_supported_range_comes_from_the_package_metadata_and_matches_the_plugin():
    spec = preflight.supported_verl()
    assert spec == ">=0.9.1,<0.10"
    assert SpecifierSet(spec) == SUPPORTED_VERL


def test_settings_from_the_recipe_overrides(settings):
    assert (settings.loss_mode, settings.knobs["tau_pos"], settings.knobs["tau_neg"]) == ("sspo", 1.0, 1.05)
    assert settings.loss_agg_mode == "seq-mean-token-mean" and settings.external_lib == "sspo_verl"
    assert settings.plugin_version == importlib.metadata.version("sspo-verl")


@pytest.mark.parametrize("overrides,message", [
    ([f"{A}.policy_loss.loss_mode=sspo", f"{A}.tau_pos=0"], "tau_pos=0 must be a finite number > 0"),
    ([f"{A}.policy_loss.loss_mode=sspo_cosine"], "names gate 'cosine', which is not registered"),
    ([f"{A}.policy_loss.loss_mod=sspo"], "do not compose into verl's config: Could not override "
                                          f"'{A}.policy_loss.loss_mod'"),
])
def test_bad_overrides_fail_on_the_driver_before_any_node_is_asked(overrides, message):
    with pytest.raises(preflight.PreflightError) as err:
        preflight.settings_from_overrides(overrides)
    assert message in str(err.value)


@pytest.mark.parametrize("method", [m for m in METHODS if not METHODS[m]["loss_mode"].startswith("sspo")])
def test_every_baseline_passes_the_driver_and_node_checks_with_the_tables_settings(method):
    """The preflight checks a baseline's own settings (its clip ratios or temperatures) on every node, as the driver
    does: it must carry them (a preflight that knew only SSPO's temperatures refused every baseline)."""
    settings = preflight.settings_from_overrides(hydra_overrides(method))
    report = preflight.check_node(asdict(settings))
    assert report["problem"] is None
    assert {"clip_ratio_low", "clip_ratio_high", "clip_ratio_c", "tau_pos"} <= set(settings.knobs)
    line = preflight.node_line("10.0.0.1", report, settings)  # the settings this loss reads, not SSPO's
    table = METHODS[method]
    shown = [f"{k}={table[k]}" for k in ("clip_ratio_low", "clip_ratio_high", "tau_pos", "tau_neg") if k in table]
    assert all(item in line for item in shown) and ("tau_pos" in line) is ("tau_pos" in table), line


def test_a_baselines_bad_setting_fails_the_preflight_naming_the_key():
    with pytest.raises(preflight.PreflightError, match=rf"loss_mode=vanilla: {A}.clip_ratio_c=1.0 must be a number > 1"):
        preflight.settings_from_overrides(hydra_overrides("grpo_dapo") + [f"{A}.clip_ratio_c=1.0"])
    settings = preflight.settings_from_overrides(hydra_overrides("gmpo"))
    sent = {**asdict(settings), "knobs": {**settings.knobs, "clip_ratio_low": -0.1}}  # as a node would receive it
    assert "clip_ratio_low=-0.1 must be a number >= 0" in preflight.check_node(sent)["problem"][0]


def test_a_users_gate_registered_by_external_lib_passes_and_a_missing_module_is_named(tmp_path, monkeypatch):
    (tmp_path / "my_gates_pf.py").write_text(
        "import torch, sspo_verl\n"
        "sspo_verl.register_gate('algebraic_pf', lambda x, t: x / torch.sqrt(1 + (t * x) ** 2),\n"
        "                        lambda x, t: (1 + (t * x) ** 2) ** -1.5, lambda t: 1 / t)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    mode = [f"{A}.policy_loss.loss_mode=sspo_algebraic_pf", f"{A}.tau_pos=1.0", f"{A}.tau_neg=1.05"]
    try:
        settings = preflight.settings_from_overrides(mode + ["actor_rollout_ref.model.external_lib=my_gates_pf"])
        assert preflight.check_node(asdict(settings))["problem"] is None
    finally:  # the gate must not leak into other tests
        GATES.pop("algebraic_pf", None)
        POLICY_LOSS_REGISTRY.pop("sspo_algebraic_pf", None)
        sys.modules.pop("my_gates_pf", None)
    with pytest.raises(preflight.PreflightError, match="external_lib=no_such_module_pf does not import here"):
        preflight.settings_from_overrides(mode + ["actor_rollout_ref.model.external_lib=no_such_module_pf"])


def test_this_interpreter_passes_the_node_checks(settings):
    report = preflight.check_node(asdict(settings))
    assert report["problem"] is None
    assert report["python"] == sys.executable
    assert report["verl"] == importlib.metadata.version("verl") and report["plugin"] == settings.plugin_version


def test_verl_outside_the_supported_range_names_the_pip_fix_for_this_interpreter(settings):
    report = preflight.check_node(asdict(replace(settings, verl_spec=">=0.10")))
    what, fix = report["problem"]
    assert what == f"verl {report['verl']} is outside the range sspo-verl supports (verl>=0.10)"
    assert fix == f"{sys.executable} -m pip install 'verl>=0.10'"


def test_a_plugin_version_other_than_the_drivers_is_a_problem(settings):
    what, fix = preflight.check_node(asdict(replace(settings, plugin_version="9.9.9")))["problem"]
    assert what == f"sspo-verl {settings.plugin_version} here, 9.9.9 on the driver"
    assert fix == f"{sys.executable} -m pip install 'sspo-verl==9.9.9'"


def test_an_interpreter_without_the_plugin_distribution_gets_the_install_command(settings, monkeypatch):
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **kw: [])  # as if it were never pip-installed
    what, fix = preflight.check_node(asdict(settings))["problem"]
    assert what.startswith("the sspo-verl plugin is not installed in this node's Python")
    assert fix == f"{sys.executable} -m pip install 'sspo-verl=={settings.plugin_version}'"


def _check_in_fresh_process(settings, **env) -> dict:
    # preflight.py loaded as a file, not as sspo_verl.tools.preflight, as the by-value Ray task reaches a node and as the
    # local preflight runs it (preflight.LOCAL_CHECK)
    out = subprocess.run([sys.executable, "-c", preflight.LOCAL_CHECK, preflight.__file__, json.dumps(asdict(settings))],
                         capture_output=True, text=True, timeout=120, env={**os.environ, **env}, cwd="/")
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_plugins_switched_off_fail_unless_external_lib_brings_the_plugin(settings):
    # a fresh process: the registry is checked as `import verl` leaves it, before the checks import sspo_verl
    report = _check_in_fresh_process(replace(settings, external_lib=None), VERL_USE_EXTERNAL_PLUGINS="none")
    what, fix = report["problem"]
    assert what == ("verl's workers here would fail with `Unsupported loss mode: sspo`: loss_mode=sspo is not "
                    "registered after `import verl` (VERL_USE_EXTERNAL_PLUGINS=none)")  # verl's get_policy_loss_fn
    assert "actor_rollout_ref.model.external_lib=sspo_verl" in fix
    assert _check_in_fresh_process(settings, VERL_USE_EXTERNAL_PLUGINS="none")["problem"] is None


def _local(*overrides, **env):
    return subprocess.run([sys.executable, "-m", "sspo_verl.tools.preflight", "--local", "--", *overrides],
                          capture_output=True, text=True, timeout=300, env={**os.environ, **env})


@pytest.mark.slow
def test_local_preflight_checks_this_machine_as_its_verl_workers_will_start():
    """Before a single-node launch (recipes/lib/run.sh): the check runs in a fresh interpreter with this
    environment, so the plugin this process imported to check the config does not hide what workers lack."""
    no_lib = [o for o in SSPO if "external_lib" not in o]
    refused = _local(*no_lib, VERL_USE_EXTERNAL_PLUGINS="none")
    assert refused.returncode == 1
    assert "preflight FAILED: node local" in refused.stderr and "`Unsupported loss mode: sspo`" in refused.stderr
    assert "nothing was launched" in refused.stderr
    ok = _local(*SSPO, VERL_USE_EXTERNAL_PLUGINS="none")  # external_lib brings the plugin to the workers
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "preflight: node local" in ok.stdout and "loss_mode=sspo registered" in ok.stdout


def test_report_lines_name_each_node_by_address_in_address_order(settings):
    reports = {
        "10.77.0.10": {"hostname": "n10", "python": "/p", "verl": "0.9.1", "plugin": "0.1.0", "problem": None},
        "10.77.0.2": {"hostname": "n2", "problem": ("the sspo-verl plugin is not installed", "/v/bin/python -m pip install x")},
        "10.77.0.1": {"hostname": "n1", "python": "/p", "verl": "0.9.1", "plugin": "0.1.0", "problem": None},
    }
    good, bad = preflight.summary(reports, settings)
    assert [line.split()[1] for line in good] == ["10.77.0.1", "10.77.0.10"]
    assert good[0] == ("node 10.77.0.1 (n1): ok — verl 0.9.1, sspo-verl 0.1.0, loss_mode=sspo registered, "
                       "tau_pos=1.0 tau_neg=1.05, python /p")
    assert bad == ["node 10.77.0.2 (n2): the sspo-verl plugin is not installed — fix: /v/bin/python -m pip install x"]


@pytest.mark.parametrize("address,expected", [("auto", None), ("ray://10.0.0.1:10001", None),
                                              ("10.0.0.1:6379", ("10.0.0.1", 6379))])
def test_split_address(address, expected):
    assert preflight.split_address(address) == expected


def test_an_address_without_a_port_is_rejected_with_the_expected_form():
    with pytest.raises(preflight.PreflightError, match=r"--address '10.0.0.1' is not HOST:PORT \(e.g. 10.0.0.1:6379\)"):
        preflight.split_address("10.0.0.1")


def test_runtime_env_file_is_read_and_a_missing_one_is_named(tmp_path):
    path = tmp_path / "env.json"
    path.write_text('{"env_vars": {"A": "1"}}')
    assert preflight.load_runtime_env(str(path)) == {"env_vars": {"A": "1"}}
    with pytest.raises(preflight.PreflightError, match="--runtime-env /nonexistent.json"):
        preflight.load_runtime_env("/nonexistent.json")


@pytest.mark.slow
def test_no_cluster_at_the_address_fails_in_seconds_with_how_to_start_it():
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "sspo_verl.tools.preflight", "--address", "127.0.0.1:1", "--", *SSPO],
                         capture_output=True, text=True, timeout=120, cwd="/")
    assert out.returncode == 1
    assert "preflight FAILED: cannot reach the Ray cluster at 127.0.0.1:1 (Connection refused)" in out.stderr
    assert "bash recipes/multinode/ray_cluster.sh head <head_ip>" in out.stderr
    assert time.monotonic() - start < 60  # composing the config is most of it; no retries against the address


def _fake_cluster(monkeypatch, ready: set, alive_per_poll: list, get=lambda ref: {"hostname": "h", "problem": None}):
    """ray.wait / ray.nodes / ray.get as wait_for_checks sees them: `ready` refs are done at once; each poll of
    the nodes returns the next entry of alive_per_poll (the addresses alive then; the last one repeats)."""
    import ray

    polls = []

    def wait(pending, num_returns, timeout):
        polls.append(timeout)
        done = [r for r in pending if r in ready]
        if len(done) < len(pending):
            time.sleep(timeout)  # as Ray's wait: until the timeout when something is still pending
        return done, [r for r in pending if r not in ready]

    def nodes():
        alive = alive_per_poll[min(len(polls), len(alive_per_poll)) - 1]
        return [{"NodeManagerAddress": ip, "Alive": ip in alive} for ip in ("10.0.0.1", "10.0.0.2")]

    monkeypatch.setattr(ray, "wait", wait)
    monkeypatch.setattr(ray, "nodes", nodes)
    monkeypatch.setattr(ray, "get", get)
    return polls


def test_a_node_that_dies_during_the_checks_is_named_at_the_next_poll_not_after_the_timeout(monkeypatch):
    polls = _fake_cluster(monkeypatch, ready={"ref-a"},
                          alive_per_poll=[{"10.0.0.1", "10.0.0.2"}, {"10.0.0.1", "10.0.0.2"}, {"10.0.0.1"}])
    start = time.monotonic()
    reports = preflight.wait_for_checks({"10.0.0.1": "ref-a", "10.0.0.2": "ref-b"}, timeout_s=600, poll_s=0.05)
    assert time.monotonic() - start < 5 and len(polls) == 3  # three polls, not the 600 s timeout
    assert reports["10.0.0.1"] == {"hostname": "h", "problem": None}
    what, fix = reports["10.0.0.2"]["problem"]
    assert what == "Ray lost this node during the preflight (it is no longer alive in the cluster)"
    assert "bash recipes/multinode/ray_cluster.sh worker <head_ip>" in fix


def test_a_check_whose_node_died_under_it_names_the_node_death(monkeypatch):
    from ray.exceptions import NodeDiedError

    def get(ref):
        raise NodeDiedError("Task failed because the node it was running on is dead or unavailable.")

    _fake_cluster(monkeypatch, ready={"ref-b"}, alive_per_poll=[{"10.0.0.1", "10.0.0.2"}], get=get)
    reports = preflight.wait_for_checks({"10.0.0.2": "ref-b"}, timeout_s=600, poll_s=0.05)
    assert reports["10.0.0.2"]["problem"][0] == "Ray lost this node during the preflight (the check task's node died)"


def test_a_node_alive_but_silent_is_named_after_the_timeout(monkeypatch):
    _fake_cluster(monkeypatch, ready=set(), alive_per_poll=[{"10.0.0.1", "10.0.0.2"}])
    start = time.monotonic()
    reports = preflight.wait_for_checks({"10.0.0.2": "ref-b"}, timeout_s=0.3, poll_s=0.05)
    assert 0.3 <= time.monotonic() - start < 5
    assert reports["10.0.0.2"]["problem"][0] == "no answer within 0.3 s (no Python worker could start there?)"


@pytest.mark.slow
def test_exit_after_ends_a_process_blocked_where_signals_do_not_reach_with_the_message():
    # the main thread blocks in a C call (a lock without timeout), as in a Ray call whose head stopped answering
    code = ("import threading, sspo_verl.tools.preflight as p; p.exit_after(0.5, 'preflight FAILED: the head is silent'); "
            "lock = threading.Lock(); lock.acquire(); lock.acquire()")
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert out.returncode == 1 and out.stderr.strip().endswith("preflight FAILED: the head is silent")
    assert time.monotonic() - start < 60  # importing the package is most of it


# ---------------------------------------------------------------------------------------------------
# A gate module on every node; user errors in one line
# ---------------------------------------------------------------------------------------------------


def test_a_node_where_the_gate_module_does_not_import_is_named_with_the_fix(settings):
    """verl's workers import external_lib in their model config and die when it fails: the node says so, rather
    than leaving it to a later `Unsupported loss mode`."""
    report = preflight.check_node(asdict(replace(settings, external_lib="no_such_gates_pf")))
    what, fix = report["problem"]
    assert what == ("actor_rollout_ref.model.external_lib=no_such_gates_pf does not import in this node's Python "
                    "(ModuleNotFoundError: No module named 'no_such_gates_pf'), and verl's workers here import it")
    assert fix == ("give your gate module as a file, GATE_MODULE=path/to/module.py (the multi-node recipes ship it "
                   f"with the job), or install it into {sys.executable}")


def test_the_ok_line_names_a_gate_module_the_node_imported(settings):
    report = {"hostname": "n1", "python": "/p", "verl": "0.9.1", "plugin": "0.1.0", "problem": None}
    line = preflight.node_line("10.77.0.1", report, replace(settings, loss_mode="sspo_algebraic",
                                                              external_lib="my_gates"))
    assert "loss_mode=sspo_algebraic registered (external_lib=my_gates), tau_pos=1.0" in line


PROG = "python -m sspo_verl.tools.preflight"


def _cli(*argv, **env):
    return subprocess.run([sys.executable, "-m", "sspo_verl.tools.preflight", *argv], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **env}, cwd="/")


@pytest.mark.parametrize("argv,message", [
    (["--address", "10.0.0.1"], "--address '10.0.0.1' is not HOST:PORT (e.g. 10.0.0.1:6379) or 'auto'"),
    (["--address", "10.0.0.1:6379", "--runtime-env", "/nonexistent.json"], "--runtime-env /nonexistent.json: "),
    (["--nodes", "-1"], "--nodes -1: give the number of nodes that must be alive"),
    (["--timeout", "0"], "--timeout 0: give the seconds to wait for the checks"),
    (["--nodes", "two"], "argument --nodes: invalid int value: 'two'"),
])
def test_bad_arguments_are_one_line_before_any_work(argv, message):
    start = time.monotonic()
    assert_one_error_line(_cli(*argv, "--", *SSPO), PROG, message)
    assert time.monotonic() - start < 30  # no config composed (that alone takes seconds), no cluster asked


def test_a_runtime_env_that_is_not_a_mapping_is_refused(tmp_path):
    path = tmp_path / "env.json"
    path.write_text('["py_modules"]')
    with pytest.raises(preflight.PreflightUsageError, match=f"--runtime-env {path} holds a list, not a runtime env"):
        preflight.load_runtime_env(str(path))


@pytest.mark.slow
@pytest.mark.parametrize("overrides,env,message", [
    ([f"{A}.policy_loss.loss_mod=sspo"], {}, "the overrides do not compose into verl's config: Could not override "
     f"'{A}.policy_loss.loss_mod'. To append to your config use +{A}.policy_loss.loss_mod=sspo (ConfigAttributeError: "
     "Key 'loss_mod' is not in struct full_key: actor_rollout_ref.actor.policy_loss.loss_mod object_type=dict)"),
    ([f"{A}.policy_loss.loss_mode=sspo", f"{A}.tau_pos=0"], {}, "tau_pos=0 must be a finite number > 0"),
    # a recipe set external_lib from GATE_MODULE: the error names the variable the user typed
    ([f"{A}.policy_loss.loss_mode=sspo", "actor_rollout_ref.model.external_lib=gone_gates_pf"],
     {"SSPO_RECIPE_KNOBS": "actor_rollout_ref.model.external_lib=GATE_MODULE", "GATE_MODULE": "gone_gates_pf"},
     "actor_rollout_ref.model.external_lib=gone_gates_pf does not import here (ModuleNotFoundError: No module named "
     "'gone_gates_pf') — fix: install it, or correct the override (actor_rollout_ref.model.external_lib comes from "
     "the recipe's environment variable GATE_MODULE='gone_gates_pf': set GATE_MODULE instead)"),
])
def test_bad_overrides_are_one_line_naming_the_key_and_the_recipes_knob(overrides, env, message):
    assert_one_error_line(_cli("--local", "--", *overrides, **env), PROG, message)
