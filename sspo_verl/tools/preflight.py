"""Preflight of a run: can every alive Ray node train this loss? Answered in seconds, before any node loads a
model or starts a rollout engine.

    python -m sspo_verl.tools.preflight [--address HEAD_IP:6379] [--runtime-env FILE] [--nodes N] -- <hydra overrides...>
    python -m sspo_verl.tools.preflight --local -- <hydra overrides...>      # one machine, no Ray cluster yet

--local (what recipes/lib/run.sh runs before a single-node launch) makes the same check in a fresh interpreter on
this machine, with this environment: what main_ppo's Ray workers here will be started with. A loss mode those
workers will not have fails here with verl's own `Unsupported loss mode` (from verl's get_policy_loss_fn, the
lookup its ppo_loss makes), before Ray starts, instead of after the first rollout.

The overrides are the recipe's (composed with verl's `ppo_trainer.yaml` as `main_ppo` does, through
`sspo_verl.tools.dry_run.compose`). The config is checked once here, then one small task runs on every alive node
(pinned with a hard node affinity) in the interpreter that Ray's workers use there, and checks what a verl
worker on that node will need:

- verl imports, and its version is in the range sspo-verl declares (its package metadata);
- the sspo-verl distribution is installed (its `sspo` entry point in group `verl.plugins`), at the driver's
  version, and `sspo_verl` imports;
- verl's get_policy_loss_fn finds the loss mode after `import verl` (plus `actor_rollout_ref.model.external_lib`),
  exactly as in a verl worker; for SSPO modes the gate exists and the temperatures are valid (the plugin's own
  validators).

Exit 0 with one line per node. Exit 1 with one line per bad node, naming its address, what is wrong and the
fix (e.g. the pip command for that node's interpreter), or with the reason the cluster cannot be reached. A bad
argument or override (a bad --address, a missing --runtime-env file, a key that does not compose, a bad tau, a
gate module that does not import) is the user's error: one line, exit 2, before any node is asked.

A gate module of one's own (`actor_rollout_ref.model.external_lib`, which the recipes set from GATE_MODULE) is
imported on every node as verl's workers will: a node where it does not import is named, with the fix. The
multi-node recipes ship a GATE_MODULE file in the job's runtime env (py_modules), which --runtime-env passes here.

Nothing hangs: a node that dies during the checks is named as soon as Ray reports its task's node dead or lists
the node dead (polled every POLL_S), one that does not answer is named after --timeout, and whatever else blocks
(a head that stops answering while Ray connects or lists nodes) ends the preflight after --timeout +
CLUSTER_GRACE_S with exit 1. With token auth (RAY_AUTH_MODE=token, as the recipes set it), Ray reads the token
from RAY_AUTH_TOKEN_PATH; the preflight never handles it.
"""

from __future__ import annotations

import importlib
import json
import importlib.metadata
import math
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import Optional

if __package__:  # as sspo_verl.tools.preflight, on the driver
    from .. import cli
    from ..errors import SSPOError
else:  # loaded by path for the local check (LOCAL_CHECK), which must not import sspo_verl before verl does
    SSPOError = ValueError

PROG = "python -m sspo_verl.tools.preflight"
DIST = "sspo-verl"
ENTRY_POINT_GROUP, ENTRY_POINT_NAME = "verl.plugins", "sspo"
DEFAULT_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 5.0
POLL_S = 2.0  # how often the wait for the checks asks which nodes are still alive
CLUSTER_GRACE_S = 40.0  # connecting and listing nodes, on top of --timeout: then the preflight gives up whatever blocks
NODE_DIED_FIX = ("look at its raylet.out under its Ray temp dir (and dmesg: out of memory?), restart its Ray "
                 "(bash recipes/multinode/ray_cluster.sh worker <head_ip>), then submit again")
START_HINT = ("start it first: `bash recipes/multinode/ray_cluster.sh head <head_ip>` on the head node and "
              "`bash recipes/multinode/ray_cluster.sh worker <head_ip> <node_ip>` on every other node")


class PreflightError(Exception):
    """A failure that is not a node's: an unreachable cluster, missing nodes ("preflight FAILED: ...", exit 1)."""


class PreflightUsageError(PreflightError, SSPOError):
    """A bad argument or override: the user's error, one line, exit 2, before any node is asked."""


@dataclass(frozen=True)
class Settings:
    """What every node checks, from the recipe's overrides and the driver's installation."""

    loss_mode: str
    loss_agg_mode: str
    knobs: dict  # every actor key the loss modes' config checks read (temperatures, clip ratios): actor_knob_keys()
    external_lib: Optional[str]
    verl_spec: str  # the verl range sspo-verl supports, e.g. ">=0.9.1,<0.10"
    plugin_version: str  # the driver's sspo-verl: every node must run the same


# ---------------------------------------------------------------------------------------------------
# On the driver: settings from the overrides
# ---------------------------------------------------------------------------------------------------


def supported_verl(dist: str = DIST) -> str:
    """The verl version range from sspo-verl's package metadata (its install_requires)."""
    from packaging.requirements import Requirement

    for line in importlib.metadata.requires(dist) or []:
        req = Requirement(line)
        if req.name == "verl" and req.marker is None:
            return ",".join(sorted(map(str, req.specifier), reverse=True))  # ">=0.9.1,<0.10"
    raise PreflightError(f"{dist}'s metadata declares no verl requirement; reinstall it: pip install -e <checkout>")


def actor_knob_keys() -> list[str]:
    """The actor keys that the plugin's config check reads for some loss mode: SSPO's temperatures and the
    baselines' settings (loss/knobs.py's rules, with the keys verl falls back to)."""
    from ..loss.knobs import KNOB_RULES

    rules = [rule for rules in KNOB_RULES.values() for rule in rules]
    return sorted({"tau_pos", "tau_neg"} | {r.key for r in rules} | {r.fallback for r in rules if r.fallback})


def settings_from_config(cfg) -> Settings:
    """The checked keys of a composed `ppo_trainer` config (a DictConfig)."""
    actor = cfg.actor_rollout_ref.actor
    return Settings(
        loss_mode=str(actor.policy_loss.loss_mode), loss_agg_mode=str(actor.loss_agg_mode),
        knobs={k: actor.get(k) for k in actor_knob_keys()},
        external_lib=cfg.actor_rollout_ref.model.get("external_lib"),
        verl_spec=supported_verl(), plugin_version=importlib.metadata.version(DIST),
    )


def settings_from_overrides(overrides: list[str]) -> Settings:
    """Compose verl's config from the overrides (as the dry run and main_ppo do) and check it once, here."""
    from .dry_run import compose, config_error, config_errors

    try:
        settings = settings_from_config(compose(overrides))
    except config_errors() as exc:  # Hydra's errors name the bad override
        raise config_error(exc, "the overrides do not compose into verl's config", PreflightUsageError) from None
    if settings.external_lib:  # a user's gates register there: import it before checking the gate, as verl will
        external_lib_error(settings.external_lib, "install it, or correct the override")
    problem = config_problem(settings)
    if problem:
        raise PreflightUsageError(f"{problem[0]} — fix: {problem[1]}")
    return settings


def external_lib_error(external_lib, fix: str) -> None:
    """Raise PreflightUsageError, naming the key (and the recipe's knob behind it), when verl's import of
    `external_lib` fails in this interpreter; the dry run asks the same."""
    from .dry_run import knob_note

    failure = import_failure(external_lib)
    if failure:
        what = f"actor_rollout_ref.model.external_lib={external_lib} does not import here ({failure})"
        raise PreflightUsageError(f"{what} — fix: {fix}{knob_note(what)}")


# ---------------------------------------------------------------------------------------------------
# On every node (a Ray task pickled by value: it must not need sspo_verl to be deserialized)
# ---------------------------------------------------------------------------------------------------


def import_failure(external_lib) -> Optional[str]:
    """verl's import of `external_lib` (a module name or a list) here: None, or why it fails, on one line."""
    from verl.utils.import_utils import import_external_libs

    try:
        import_external_libs(external_lib)
    except Exception as exc:  # the user's module may raise anything on import: reported, with the fix
        return f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    return None


def config_problem(s) -> Optional[tuple[str, str]]:
    """The plugin's own config check on this interpreter (an SSPO gate and its temperatures, a baseline's
    settings), on the actor keys it reads: (what, fix) or None."""
    from sspo_verl.loss.plugin import check_actor_config

    actor = SimpleNamespace(policy_loss={"loss_mode": s.loss_mode}, loss_agg_mode=s.loss_agg_mode, **s.knobs)
    try:
        check_actor_config(actor)
    except ValueError as exc:
        return str(exc), "correct that override on the recipe's command line"
    return None


def node_problem(s, report: dict) -> Optional[tuple[str, str]]:
    """The first thing that would stop a verl worker in this interpreter from training `s.loss_mode`, with its
    fix; None when there is none. Fills report["verl"] / report["plugin"] with the versions found."""
    pip = f"{sys.executable} -m pip install"
    install_verl = f"{pip} 'verl{s.verl_spec}'"
    install_plugin = f"{pip} '{DIST}=={s.plugin_version}'"
    try:
        import verl  # noqa: F401  (loads the verl.plugins entry points, as in every verl worker)
        from verl.trainer.ppo.core_algos import get_policy_loss_fn
    except Exception as exc:
        return f"verl does not import ({type(exc).__name__}: {exc})", install_verl

    def refusal() -> Optional[str]:
        """verl's own answer when its ppo_loss looks the loss mode up here: None, or its error's first sentence."""
        try:
            get_policy_loss_fn(s.loss_mode)
        except ValueError as exc:  # "Unsupported loss mode: <mode>. Supported modes are: [...]"
            return str(exc).split(". Supported")[0]
        return None

    report["verl"] = importlib.metadata.version("verl")
    from packaging.specifiers import SpecifierSet

    if not SpecifierSet(s.verl_spec).contains(report["verl"], prereleases=True):
        return f"verl {report['verl']} is outside the range sspo-verl supports (verl{s.verl_spec})", install_verl
    # what a verl worker here will see: the registry after `import verl`, then after verl imports external_lib
    # (which its model config does, failing the worker when the import fails)
    refused = refusal()
    lib_failure = import_failure(s.external_lib) if s.external_lib else None
    if refused and s.external_lib:
        refused = refusal()

    entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=ENTRY_POINT_NAME)
    if not entry_points:
        return (f"the {DIST} plugin is not installed in this node's Python (no `{ENTRY_POINT_NAME}` entry point in "
                f"group {ENTRY_POINT_GROUP})", install_plugin)
    report["plugin"] = importlib.metadata.version(DIST)
    if report["plugin"] != s.plugin_version:
        return f"{DIST} {report['plugin']} here, {s.plugin_version} on the driver", install_plugin
    try:
        importlib.import_module("sspo_verl")
    except Exception as exc:
        return f"{DIST} is installed but `import sspo_verl` fails ({type(exc).__name__}: {exc})", \
            f"{pip} --force-reinstall '{DIST}=={s.plugin_version}'"
    if lib_failure:
        return (f"actor_rollout_ref.model.external_lib={s.external_lib} does not import in this node's Python "
                f"({lib_failure}), and verl's workers here import it",
                f"give your gate module as a file, GATE_MODULE=path/to/module.py (the multi-node recipes ship it "
                f"with the job), or install it into {sys.executable}")
    problem = config_problem(s)
    if problem:
        return problem
    if refused:
        policy = os.environ.get("VERL_USE_EXTERNAL_PLUGINS", "auto")
        return (f"verl's workers here would fail with `{refused}`: loss_mode={s.loss_mode} is not registered after "
                f"`import verl` (VERL_USE_EXTERNAL_PLUGINS={policy})",
                "unset VERL_USE_EXTERNAL_PLUGINS on this node (or include `sspo` in it), or add "
                "actor_rollout_ref.model.external_lib=sspo_verl")
    return None


def check_node(settings: dict) -> dict:
    """Runs on one node: its hostname, interpreter, versions and first problem (what, fix) or None."""
    report = {"hostname": socket.gethostname(), "python": sys.executable, "verl": None, "plugin": None}
    try:
        report["problem"] = node_problem(SimpleNamespace(**settings), report)  # not Settings: sent by value
    except Exception as exc:  # an unforeseen failure is still this node's, and must not hide the others
        report["problem"] = (f"the check itself failed ({type(exc).__name__}: {exc})", "see the node's worker logs")
    return report


# ---------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------


def node_line(ip: str, report: dict, s: Settings) -> str:
    """One line per node: `node <ip> (<host>): ok — ...` or `node <ip> (<host>): <what> — fix: <fix>`."""
    head = f"node {ip} ({report.get('hostname') or '?'})"
    if report.get("problem"):
        what, fix = report["problem"]
        return f"{head}: {what} — fix: {fix}"
    lib = f" (external_lib={s.external_lib})" if s.external_lib and s.external_lib != "sspo_verl" else ""
    return (f"{head}: ok — verl {report['verl']}, {DIST} {report['plugin']}, loss_mode={s.loss_mode} registered"
            f"{lib}, {loss_settings(s)}python {report['python']}")


def loss_settings(s) -> str:
    """'key=value ..., ' for the settings the loss mode reads: a baseline's own (loss/knobs.py), SSPO's temperatures."""
    from ..loss.knobs import settings_read

    keys = settings_read(s.loss_mode)  # none for a loss of the user's own: its settings are its business
    return " ".join(f"{key}={s.knobs.get(key)}" for key in keys) + ", " if keys else ""


def summary(reports: dict[str, dict], s: Settings) -> tuple[list[str], list[str]]:
    """(lines of good nodes, lines of bad nodes), in address order."""
    good, bad = [], []
    for ip in sorted(reports, key=_ip_key):
        (bad if reports[ip].get("problem") else good).append(node_line(ip, reports[ip], s))
    return good, bad


def _ip_key(ip: str):
    parts = ip.split(".")
    return [int(p) for p in parts] if all(p.isdigit() for p in parts) else [ip]


# ---------------------------------------------------------------------------------------------------
# The cluster
# ---------------------------------------------------------------------------------------------------


def split_address(address: str) -> Optional[tuple[str, int]]:
    """(host, port) of a `host:port` GCS address; None for `auto` or a `ray://` client address."""
    if address == "auto" or "://" in address:
        return None
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise PreflightUsageError(f"--address {address!r} is not HOST:PORT (e.g. 10.0.0.1:6379) or 'auto'")
    return host, int(port)


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Fail in seconds, with the address and how to start the cluster, when nothing listens there."""
    target = split_address(address)
    if target is None:
        return
    try:
        socket.create_connection(target, timeout=timeout_s).close()
    except OSError as exc:
        raise PreflightError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); {START_HINT}; "
                             f"or pass --address <head_ip>:6379 (or set RAY_ADDRESS)") from None


def load_runtime_env(path: Optional[str]) -> Optional[dict]:
    """The job's runtime env (JSON or YAML), so the checks see the env vars the job's workers will see."""
    if not path:
        return None
    import yaml

    try:
        with open(path) as f:
            env = yaml.safe_load(f) or None
    except (OSError, yaml.YAMLError) as exc:
        raise PreflightUsageError(f"--runtime-env {path}: {' '.join(str(exc).split())}") from None
    if env is not None and not isinstance(env, dict):
        raise PreflightUsageError(f"--runtime-env {path} holds a {type(env).__name__}, not a runtime env (a mapping "
                                  f'such as {{"env_vars": {{...}}, "py_modules": [...]}})')
    return env


def run_checks(address: str, settings: Settings, runtime_env: Optional[dict], timeout_s: float,
               min_nodes: int = 0) -> dict[str, dict]:
    """One check task per alive node; returns {node ip: report}."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    check_reachable(address)
    try:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False, logging_level="ERROR")
    except Exception as exc:
        raise PreflightError(f"cannot connect to the Ray cluster at {address} ({type(exc).__name__}: {exc}); "
                             f"{START_HINT}") from None
    module = sys.modules[__name__]
    by_value = module.__name__ != "__main__"
    if by_value:  # so that a node without sspo_verl can still load the check (and report that it lacks it)
        ray.cloudpickle.register_pickle_by_value(module)
    try:
        nodes = [n for n in ray.nodes() if n["Alive"]]
        if len(nodes) < min_nodes:
            raise PreflightError(f"only {len(nodes)} of {min_nodes} nodes are alive in the cluster at {address} "
                                 f"({', '.join(n['NodeManagerAddress'] for n in nodes)}); {START_HINT}")
        task = ray.remote(num_cpus=0, max_retries=0)(check_node)
        refs = {n["NodeManagerAddress"]: task.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(asdict(settings))
            for n in nodes}
        reports = wait_for_checks(refs, timeout_s)
        for n in nodes:  # a node that died never said its name: Ray's record of it has it
            reports[n["NodeManagerAddress"]].setdefault("hostname", n["NodeManagerHostname"])
        return reports
    finally:
        if by_value:
            ray.cloudpickle.unregister_pickle_by_value(module)
        ray.shutdown()


# This file loaded by path, not as sspo_verl.tools.preflight: importing the package first would make a later
# `import sspo_verl` (external_lib) a no-op, which a worker's is not.
LOCAL_CHECK = ("import importlib.util as u, json, sys; spec = u.spec_from_file_location('preflight', sys.argv[1]); "
               "m = sys.modules['preflight'] = u.module_from_spec(spec); spec.loader.exec_module(m); "
               "print(json.dumps(m.check_node(json.loads(sys.argv[2]))))")


def run_local_check(settings: Settings, timeout_s: float) -> dict[str, dict]:
    """The node check on this machine, in a fresh interpreter with this environment, as main_ppo's Ray workers
    here start (this process has already imported the plugin to check the config: it would see the loss mode
    whatever a worker sees). Returns {"local": report}."""
    try:
        proc = subprocess.run([sys.executable, "-c", LOCAL_CHECK, __file__, json.dumps(asdict(settings))],
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise PreflightError(f"the local check took more than {timeout_s:g} s (is `import verl` hanging?)") from None
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise PreflightError(f"the local check could not run ({sys.executable} exited {proc.returncode}): "
                             f"{proc.stderr.strip()[-800:]}")
    return {"local": json.loads(lines[-1])}


def wait_for_checks(refs: dict, timeout_s: float, poll_s: float = POLL_S) -> dict[str, dict]:
    """{node ip: report} from the check tasks `refs` ({node ip: ref}). A node that Ray marks dead meanwhile is
    reported as soon as it is seen dead (a check pinned to it may otherwise wait out the whole timeout); one that
    does not answer within timeout_s is reported as such."""
    import ray

    reports, pending = {}, dict(refs)
    deadline = time.monotonic() + timeout_s
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _ = ray.wait(list(pending.values()), num_returns=len(pending), timeout=min(poll_s, left))
        for ip in [ip for ip, ref in pending.items() if ref in ready]:
            reports[ip] = _collect(pending.pop(ip))
        alive = {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
        for ip in [ip for ip in pending if ip not in alive]:
            del pending[ip]
            reports[ip] = {"problem": ("Ray lost this node during the preflight (it is no longer alive in the "
                                       "cluster)", NODE_DIED_FIX)}
    for ip in pending:
        reports[ip] = {"problem": (f"no answer within {timeout_s:g} s (no Python worker could start there?)",
                                   "look at that node's raylet.out / python-core-worker-*.log under its Ray temp dir")}
    return reports


def _collect(ref) -> dict:
    import ray
    from ray.exceptions import NodeDiedError

    try:
        return ray.get(ref)
    except NodeDiedError:
        return {"problem": ("Ray lost this node during the preflight (the check task's node died)", NODE_DIED_FIX)}
    except Exception as exc:  # the worker died or could not load the task
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return {"problem": (f"the check task failed ({first})", "look at that node's worker logs")}


def exit_after(seconds: float, message: str) -> threading.Timer:
    """Print `message` to stderr and end the process with exit code 1 after `seconds`, whatever the main thread is
    blocked in (a call into Ray's C++ core does not return to Python for signals). Cancel it when done."""

    def give_up():
        print(message, file=sys.stderr, flush=True)
        os._exit(1)

    timer = threading.Timer(seconds, give_up)
    timer.daemon = True
    timer.start()
    return timer


def main(argv=None) -> int:
    parser = cli.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS", "auto"),
                        help="the cluster's GCS address HEAD_IP:6379 (default: $RAY_ADDRESS, else auto)")
    parser.add_argument("--local", action="store_true",
                        help="check this machine in a fresh interpreter instead of a cluster's nodes (no Ray)")
    parser.add_argument("--runtime-env", default=None, help="the job's runtime env file (JSON or YAML)")
    parser.add_argument("--nodes", type=int, default=0, help="fail unless at least this many nodes are alive")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait for the checks")
    parser.add_argument("overrides", nargs="*", help="after --: the recipe's Hydra overrides")
    args = parser.parse_args(argv)
    if args.nodes < 0:
        parser.error(f"--nodes {args.nodes}: give the number of nodes that must be alive, 0 or more")
    if not (args.timeout > 0 and math.isfinite(args.timeout)):
        parser.error(f"--timeout {args.timeout:g}: give the seconds to wait for the checks, e.g. --timeout 60")
    return cli.run(PROG, preflight, args)


def preflight(args) -> int:
    """The checks `args` ask for; an argument or override of the user's raises PreflightUsageError first."""
    start = time.monotonic()
    runtime_env = None
    if not args.local:  # the arguments, before the seconds that composing the config takes
        split_address(args.address)
        runtime_env = load_runtime_env(args.runtime_env)
    try:
        settings = settings_from_overrides(args.overrides)
        if args.local:
            return _report(run_local_check(settings, args.timeout), settings, start)
        # Ray's own calls (connect, list nodes, shut down) have no timeout of ours: a head that stops answering
        # must still end the preflight
        limit_s = args.timeout + CLUSTER_GRACE_S
        deadline = exit_after(limit_s, f"preflight FAILED: no result from the Ray cluster at {args.address} within "
                                       f"{limit_s:g} s (did its head stop answering?); nothing was launched")
        try:
            reports = run_checks(args.address, settings, runtime_env, args.timeout, args.nodes)
        finally:
            deadline.cancel()
    except PreflightUsageError:
        raise  # cli.run: one line, exit 2
    except PreflightError as exc:
        print(f"preflight FAILED: {exc}", file=sys.stderr)
        return 1
    return _report(reports, settings, start)


def _report(reports: dict[str, dict], settings: Settings, start: float) -> int:
    good, bad = summary(reports, settings)
    took = f"{time.monotonic() - start:.1f} s"
    for line in good:
        print(f"preflight: {line}")
    for line in bad:
        print(f"preflight FAILED: {line}", file=sys.stderr)
    if bad:
        print(f"preflight FAILED: {len(bad)} of {len(reports)} nodes cannot train loss_mode={settings.loss_mode}; "
              f"nothing was launched ({took})", file=sys.stderr)
        return 1
    print(f"preflight: all {len(reports)} nodes ready for loss_mode={settings.loss_mode} ({took})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
