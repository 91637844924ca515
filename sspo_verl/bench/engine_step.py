"""Step time of verl's real FSDP2 training engine on CPU with `sspo` vs `vanilla` (and `sapo`).

Same model, same batch; the loss modes alternate step by step (the order rotates every round), so drift and
the optimizer's state hit all alike. Each step is one verl `train_batch`: forward, ppo_loss, backward,
optimizer step. Reports the median step time per mode, its ratio to vanilla, the spread, and the time spent
inside verl's `ppo_loss` (forward only; the loss's backward is inside the engine's backward).

    python -m sspo_verl.bench.engine_step            # tiny Qwen2, 16 x 1024-token responses, 8 steps per mode
    python -m sspo_verl.bench.engine_step --quick
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per mode (default 8, quick 2)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--response-len", type=int, default=1024)
    parser.add_argument("--modes", default="vanilla,sspo,sapo")
    args = parser.parse_args(argv)
    steps = args.steps or (2 if args.quick else 8)
    response_len = 64 if args.quick else args.response_len

    from sspo_verl.verl_on_cpu import harness as h

    h.use_cpu_platform()
    import sspo_verl.loss.plugin  # noqa: F401  registers the loss modes

    logging.getLogger("sspo_verl.loss.plugin").setLevel(logging.ERROR)
    h.init_single_process_group()
    modes = args.modes.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        model = h.make_tiny_model(tmp)
        engine = h.make_engine(model, micro_batch_size=4)
        td = h.rollout_batch(args.batch, 32, response_len, h.TINY_QWEN2["vocab_size"], micro_batch_size=4)
        cfgs = {m: h.actor_config(m, args.batch, 4) for m in modes}
        times = {m: [] for m in modes}
        loss_times = {m: [] for m in modes}
        for step in range(steps + 1):  # step 0 warms up
            order = modes[step % len(modes):] + modes[: step % len(modes)]  # rotate: no mode always runs first
            for m in order:
                spent = []
                t0 = time.perf_counter()
                out = h.train_step(engine, td, cfgs[m], on_loss_time=spent.append)
                if step:
                    times[m].append(time.perf_counter() - t0)
                    loss_times[m].append(sum(spent))
                assert out["metrics"]["grad_norm"] == out["metrics"]["grad_norm"], "NaN grad norm"
    base = statistics.median(times[modes[0]])
    print(f"verl FSDP2 engine on CPU, tiny Qwen2 ({h.TINY_QWEN2['hidden_size']} hidden, "
          f"{h.TINY_QWEN2['num_hidden_layers']} layers), batch {args.batch} x {response_len} response tokens, "
          f"{steps} steps per mode, alternating\n")
    print(f"| mode | median step s | step / {modes[0]} | fastest s | slowest s | ppo_loss ms per step | loss share |")
    print("|---|---|---|---|---|---|---|")
    for m in modes:
        t, lt = statistics.median(times[m]), statistics.median(loss_times[m])
        print(f"| {m} | {t:.3f} | {t / base:.3f} | {min(times[m]):.3f} | {max(times[m]):.3f} | {lt * 1e3:.1f} | "
              f"{lt / t:.2%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
