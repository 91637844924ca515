"""Payloads for the fault tests (PAYLOAD="python tests/multinode/payload.py <mode> --", in place of main_ppo; the
recipe's overrides that follow are ignored).

    fail   prints `payload line 1..30`, then exits 3: a job that fails on the cluster
    hold   one actor on every alive node, then waits on the head node's actor, as a rank waits in a collective
           whose peer is gone: only the recipe's watch (or scancel) can end it; gives up after --hold-s
    gate   reads the recipe's external_lib and loss_mode from its overrides, then in the job's driver and in a
           task on every alive node does what a verl worker does with them (import_external_libs, then
           get_policy_loss_fn); prints where each imported the module from
"""

from __future__ import annotations

import argparse
import os
import sys
import time

FAIL_LINES = 30
FAIL_EXIT = 3


def fail() -> int:
    for i in range(1, FAIL_LINES + 1):
        print(f"payload line {i}", flush=True)
    return FAIL_EXIT


def hold(hold_s: float) -> int:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ray.init(address=os.environ.get("RAY_ADDRESS", "auto"), log_to_driver=False)

    @ray.remote(num_cpus=0)
    class Rank:
        def wait(self, seconds: float) -> str:
            time.sleep(seconds)
            return "timed out"

    nodes = sorted((n for n in ray.nodes() if n["Alive"]), key=lambda n: n["NodeManagerAddress"])
    ranks = [Rank.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
             for n in nodes]
    ray.get([r.wait.remote(0) for r in ranks])  # every rank is up
    print(f"holding on {len(ranks)} nodes: {' '.join(n['NodeManagerAddress'] for n in nodes)}", flush=True)
    print(ray.get(ranks[0].wait.remote(hold_s)), flush=True)  # the head's rank (lowest address in the tests)
    return 4


def look_up(external_lib: str, loss_mode: str) -> tuple[str, str]:
    """What a verl worker does with the launch's model.external_lib and loss mode; (this node, the module's file)."""
    import importlib

    import ray
    from verl.trainer.ppo.core_algos import get_policy_loss_fn
    from verl.utils.import_utils import import_external_libs

    import_external_libs(external_lib)
    get_policy_loss_fn(loss_mode)  # verl's "Unsupported loss mode" unless the module registered it here
    return ray.util.get_node_ip_address(), importlib.import_module(external_lib).__file__


def gate(overrides: list[str]) -> int:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    values = dict(o.split("=", 1) for o in overrides if "=" in o)  # key=value, the last one of a key wins
    lib, mode = values["actor_rollout_ref.model.external_lib"], values["actor_rollout_ref.actor.policy_loss.loss_mode"]
    ray.init(address=os.environ.get("RAY_ADDRESS", "auto"), log_to_driver=False)
    _, file = look_up(lib, mode)
    print(f"driver: {mode} registered by {file}", flush=True)
    nodes = sorted((n for n in ray.nodes() if n["Alive"]), key=lambda n: n["NodeManagerAddress"])
    task = ray.remote(num_cpus=0, max_retries=0)(look_up)
    for ip, file in ray.get([task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                             .remote(lib, mode) for n in nodes]):
        print(f"node {ip}: {mode} registered by {file}", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["fail", "hold", "gate"])
    parser.add_argument("--hold-s", type=float, default=240)
    args, overrides = parser.parse_known_args()
    if args.mode == "gate":
        return gate(overrides)
    return fail() if args.mode == "fail" else hold(args.hold_s)


if __name__ == "__main__":
    sys.exit(main())
