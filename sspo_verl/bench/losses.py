"""Benchmark of the registered policy losses, called exactly as verl's ppo_loss calls them.

For each shape and dtype it times forward + backward (median of repeats, candidates alternated within each
repeat so drift hits all alike) and measures the peak extra memory of one forward + backward above the inputs.
Every figure is also given as a ratio to `vanilla` from the same run.

    python -m sspo_verl.bench.losses            # all shapes, fp32 and bf16, CPU (and CUDA when present)
    python -m sspo_verl.bench.losses --quick    # the smallest shape only (CI smoke test)

Peak memory on CPU is the process's resident high-water mark (Linux VmHWM, reset through
/proc/self/clear_refs) with glibc's mmap threshold fixed, so every large buffer is mapped on allocation and
returned on free; the script re-executes itself with MALLOC_MMAP_THRESHOLD_ set for that. On CUDA it is
torch.cuda.max_memory_allocated.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time

import torch

SHAPES = [(16, 1024), (64, 4096), (256, 8192), (8, 32768), (64, 16384)]
MODES = ["vanilla", "gspo", "geo_mean", "sapo", "sspo", "sspo[reference]", "sspo_sigmoid", "sspo_erf", "sspo_softsign",
         "sspo_sapo", "sspo_sapo[reference]"]
# printed at the end, for the largest CPU shape in fp32: (numerator, denominator)
RATIOS = [("sspo", "sapo"), ("sspo_sapo", "sapo"), ("sspo_sapo", "sspo_sapo[reference]")]
_MMAP_ENV = "MALLOC_MMAP_THRESHOLD_"


def _configs(modes, B, T):
    from sspo_verl.tools.demo import actor_config

    out = {}
    for mode in modes:
        base = mode.split("[")[0]
        cfg = actor_config(base)
        cfg.global_batch_info.update(dp_size=1, batch_num_tokens=None, global_batch_size=B, loss_scale_factor=None)
        impl = "reference" if mode.endswith("[reference]") else "fused"
        out[mode] = (base, cfg, impl)
    return out


def _inputs(B, T, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(B, T, generator=g) * 4
    log_prob = old + 0.3 * torch.randn(B, T, generator=g)
    adv = torch.randn(B, 1, generator=g).expand(B, T).contiguous()
    lengths = torch.randint(T // 2, T + 1, (B, 1), generator=g)
    mask = torch.arange(T).unsqueeze(0) < lengths  # (B, T) bool, as ppo_loss passes it
    return [t.to(device) for t in (old.to(dtype), log_prob.to(dtype), adv.to(dtype), mask)]


def _step(fn, cfg, old, log_prob, adv, mask):
    lp = log_prob.detach().requires_grad_(True)
    loss, _ = fn(old_log_prob=old, log_prob=lp, advantages=adv, response_mask=mask, loss_agg_mode=cfg.loss_agg_mode,
                 config=cfg, rollout_is_weights=None)
    loss.backward()
    return lp.grad


class _CpuPeak:
    """Peak resident memory above the level at start, in bytes (Linux)."""

    def _read(self, key):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
        raise RuntimeError(key)

    def __enter__(self):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        self.start = self._read("VmRSS:")
        return self

    def __exit__(self, *exc):
        self.peak = max(0, self._read("VmHWM:") - self.start)  # RSS may dip below the start level: no peak


def _peak_bytes(device, run) -> int:
    if device == "cuda":
        torch.cuda.synchronize()
        start = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        run()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - start
    with _CpuPeak() as p:
        run()
    return p.peak


def bench(shape, dtype, device, modes, repeats):
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    from sspo_verl.loss import plugin

    B, T = shape
    inputs = _inputs(B, T, dtype, device)
    cases = _configs(modes, B, T)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times = {m: [] for m in modes}
    peaks = {}

    def run(mode):
        base, cfg, impl = cases[mode]
        plugin.IMPLEMENTATION = impl
        try:
            return _step(get_policy_loss_fn(base), cfg, *inputs)
        finally:
            plugin.IMPLEMENTATION = "fused"

    for mode in modes:  # warm-up, and the memory measurement on a quiet process
        run(mode)
        peaks[mode] = _peak_bytes(device, lambda: run(mode))
    for _ in range(repeats):
        for mode in modes:
            sync()
            t0 = time.perf_counter()
            run(mode)
            sync()
            times[mode].append(time.perf_counter() - t0)
    return {m: (statistics.median(times[m]), peaks[m]) for m in modes}


def _device_name(device):
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smallest shape only (smoke test)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per candidate (default 7, quick 3)")
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated loss modes")
    args = parser.parse_args(argv)
    if _MMAP_ENV not in os.environ and sys.platform.startswith("linux"):  # see module docstring
        os.execvpe(sys.executable, [sys.executable, "-m", "sspo_verl.bench.losses", *(argv or sys.argv[1:])],
                   {**os.environ, _MMAP_ENV: "65536"})
    logging.getLogger("sspo_verl.loss.plugin").setLevel(logging.ERROR)
    import sspo_verl.loss.plugin  # noqa: F401  registers the modes

    modes = args.modes.split(",")
    assert modes[0] == "vanilla", "the first mode is the baseline of the ratios"
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if args.device != "all":
        devices = [args.device]
    shapes = SHAPES[:1] if args.quick else SHAPES
    repeats = args.repeats or (3 if args.quick else 7)
    largest_cpu = None
    for device in devices:
        print(f"\n## {_device_name(device)}\n")
        print("| shape (B x T) | dtype | mode | fwd+bwd ms | time / vanilla | peak extra MiB | memory / vanilla |")
        print("|---|---|---|---|---|---|---|")
        for shape in shapes:
            if device == "cpu" and shape == (64, 16384) and not args.quick:
                continue  # the GPU target shape; on CPU (256 x 8192) is the large one
            for dtype in (torch.float32, torch.bfloat16):
                res = bench(shape, dtype, device, modes, repeats)
                t0, m0 = res["vanilla"]
                for mode, (t, m) in res.items():
                    print(f"| {shape[0]} x {shape[1]} | {str(dtype).split('.')[-1]} | {mode} | {t * 1e3:.2f} | "
                          f"{t / t0:.2f} | {m / 2**20:.1f} | {m / max(m0, 1):.2f} |", flush=True)
                if device == "cpu" and dtype == torch.float32:
                    if largest_cpu is None or shape[0] * shape[1] >= largest_cpu[0]:
                        largest_cpu = (shape[0] * shape[1], res)
    if largest_cpu is not None:
        res = largest_cpu[1]
        print()
        for num, den in RATIOS:
            if num in res and den in res:
                print(f"{num}/{den} time ratio: {res[num][0] / res[den][0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
