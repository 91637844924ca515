"""Payloads for the fault tests (PAYLOAD="python tests/multinode/payload.py <mode> --", in place of main_ppo; the
recipe's overrides that follow are ignored).

    fail   prints `payload line 1..30`, then exits 3: a job that fails on the cluster
    hold   one actor on every alive node, then waits on the head node's actor, as a rank waits in a collective
           whose peer is gone: only the recipe's watch (or scancel) can end it; gives up after --hold-s
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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["fail", "hold"])
    parser.add_argument("--hold-s", type=float, default=240)
    args, _overrides = parser.parse_known_args()
    return fail() if args.mode == "fail" else hold(args.hold_s)


if __name__ == "__main__":
    sys.exit(main())
