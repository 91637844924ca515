"""Does SSPO's gap to grpo_dapo change with response length? One table and one figure from finished sweeps.

    python -m sspo_verl.testbed.lengths docs/results/sweep-cpu docs/results/sweep-long-cpu --out docs/results/length-gap

For each sweep folder (python -m sspo_verl.testbed.sweep): its mean response length in tokens (config.json's
mean_response_tokens, or the mean of its records' response_len for a sweep written before it was recorded), and
the paired-by-seed difference in final test accuracy of each soft method against grpo_dapo at the sweep's largest
M, every method at the knob the sweep chose on val (sweep.paired_differences). Writes summary.md and gap_vs_length.png.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np

from .. import cli
from ..errors import SSPOError, require_module

PROG = "python -m sspo_verl.testbed.lengths"
BASELINE = "grpo_dapo"
FOCUS = ("sspo", "sspo_sapo")  # drawn boldly; the other methods of the sweeps thinly


def read_sweep(folder: Path) -> dict:
    """{folder, tokens, M, seeds, gaps: {method: {seed: difference}}, argv} of a finished sweep folder."""
    from .analysis import mean_response_tokens
    from .sweep import paired_differences

    missing = [name for name in ("config.json", "runs.json", "chosen.json") if not (folder / name).exists()]
    if missing:
        raise SSPOError(f"{folder} is not a finished sweep folder (no {', '.join(missing)}): give the --out of a "
                        f"python -m sspo_verl.testbed.sweep that ran to the end")
    config = json.loads((folder / "config.json").read_text())
    rows = json.loads((folder / "runs.json").read_text())
    chosen = json.loads((folder / "chosen.json").read_text())
    if BASELINE not in chosen:
        raise SSPOError(f"{folder}: the sweep has no {BASELINE} runs, the baseline of the gap")
    tokens = config.get("mean_response_tokens")
    if tokens is None:
        with gzip.open(folder / "metrics.jsonl.gz", "rt") as f:
            tokens = mean_response_tokens([json.loads(line) for line in f])
    m = max(config["mini_batches"])
    gaps = {method: paired_differences(rows, chosen, method, BASELINE, m) for method in chosen if method != BASELINE}
    return {"folder": str(folder), "tokens": float(tokens), "M": m, "seeds": config["seeds"], "gaps": gaps,
            "chosen": {method: c["label"] for method, c in chosen.items()}, "argv": config["argv"]}


def table(sweeps: list[dict]) -> str:
    lines = ["| sweep | mean response tokens | M | method (knob chosen on val) | minus grpo_dapo, mean [min, max] "
             "| seeds ahead | per seed |", "|---|---|---|---|---|---|---|"]
    for s in sorted(sweeps, key=lambda s: s["tokens"]):
        for method, gap in s["gaps"].items():
            d = np.array(list(gap.values()))
            per_seed = ", ".join(f"{seed}: {v:+.3f}" for seed, v in gap.items())
            lines.append(f"| {Path(s['folder']).name} | {s['tokens']:.1f} | {s['M']} | {method} ({s['chosen'][method]}) "
                         f"| {d.mean():+.3f} [{d.min():+.3f}, {d.max():+.3f}] | {int((d > 0).sum())}/{len(d)} "
                         f"| {per_seed} |")
    return "\n".join(lines)


def plot(sweeps: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    sweeps = sorted(sweeps, key=lambda s: s["tokens"])
    methods = sorted({m for s in sweeps for m in s["gaps"]}, key=lambda m: (m not in FOCUS, m))
    for k, method in enumerate(methods):
        pts = [(s["tokens"], list(s["gaps"][method].values())) for s in sweeps if method in s["gaps"]]
        x = np.array([t for t, _ in pts])
        mean = np.array([np.mean(d) for _, d in pts])
        bold = method in FOCUS
        (line,) = ax.plot(x, mean, marker="o", lw=2.2 if bold else 0.9, alpha=1.0 if bold else 0.55,
                          label=f"{method} ({'mean; dots: seeds' if bold else 'mean'})", zorder=3 if bold else 2)
        if bold:
            for t, d in pts:
                ax.scatter([t * (1 + 0.02 * (k - 0.5))] * len(d), d, color=line.get_color(), s=14, alpha=0.6)
    ax.axhline(0, color="gray", ls=":")
    ax.set_xscale("log")
    lengths = sorted({round(s["tokens"]) for s in sweeps})  # two sweeps of one length: one tick
    ax.set_xticks(lengths, [str(t) for t in lengths])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # the log axis' own labels would overlap ours
    ax.set_xlabel("mean response length (tokens)")
    ax.set_ylabel("final test accuracy minus grpo_dapo's (paired by seed)")
    ax.set_title(f"The gap to grpo_dapo at M = {', '.join(sorted({str(s['M']) for s in sweeps}))} against response "
                 f"length", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = cli.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("sweeps", nargs="+", help="finished sweep folders (python -m sspo_verl.testbed.sweep --out ...)")
    p.add_argument("--out", required=True, help="folder for summary.md and gap_vs_length.png")
    args = p.parse_args(argv)
    try:
        require_module("matplotlib", "testbed", f"{PROG} (its figure)")
    except ModuleNotFoundError as exc:
        p.error(str(exc))
    for folder in args.sweeps:
        if not Path(folder).is_dir():
            p.error(f"{folder}: no such sweep folder")
    return cli.run(PROG, write, [Path(f) for f in args.sweeps], Path(args.out),
                   sys.argv[1:] if argv is None else list(argv))


def write(folders: list[Path], out: Path, argv: list[str]) -> int:
    sweeps = [read_sweep(f) for f in folders]
    out.mkdir(parents=True, exist_ok=True)
    plot(sweeps, out / "gap_vs_length.png")
    text = "\n".join([
        "# The gap to grpo_dapo against response length", "", f"`{PROG} {' '.join(argv)}`", "",
        "Each method at the knob its sweep chose on val; final test accuracy minus grpo_dapo's at the same seed (same "
        "cold start, same first rollout batch), at the sweep's largest M.", "", table(sweeps), "",
        "![gap against length](gap_vs_length.png)", "",
        "The sweeps: " + "; ".join(f"{Path(s['folder']).name}: `python -m sspo_verl.testbed.sweep {' '.join(s['argv'])}`"
                                   for s in sweeps), ""])
    (out / "summary.md").write_text(text)
    (out / "gaps.json").write_text(json.dumps(sweeps, indent=1) + "\n")
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
