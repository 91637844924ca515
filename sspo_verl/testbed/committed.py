"""Does a fresh run hold up the committed run's conclusions? (`make run` ends with this comparison.)

The accuracies depend on the machine: a CPU type with other vector kernels, or another torch build, rounds
differently, and over 30 RL steps the runs drift apart (a fresh clone on another CPU type gave cold-start val 0.286
against the committed 0.320, and gains of +0.39 to +0.47 against +0.31 to +0.38). What the committed run concludes
should not: each conclusion below is computed from both runs and reported as holding or not.

    gains      every method's mean gain over the cold start on the test split is at least analysis.TARGET_GAIN
    ordering   each method is ahead of / behind the baseline (grpo_dapo) at M = 16 by its mean final test accuracy,
               as in the committed run
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .analysis import TARGET_GAIN, group_runs, measure

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = {"short": ROOT / "docs" / "results" / "main-cpu"}  # task preset -> the committed run of its default job
BASELINE = "grpo_dapo"
SAME = ("task", "rl", "model_size", "sft_steps", "sft_batch", "flawed_fraction", "methods", "on_policy_control",
        "seeds", "device", "runs")  # config.json keys two runs must share to be compared


def _setting(config: dict, key: str):
    """A config.json setting, the task and RL settings as their dataclasses (a field added since has its default)."""
    from .arithmetic import ArithmeticTask
    from .grpo import RLConfig

    kind = {"task": ArithmeticTask, "rl": RLConfig}.get(key)
    value = config.get(key)
    return kind(**value) if kind and value is not None else json.dumps(value)


def _read(folder: Path) -> tuple[list[dict], dict]:
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return records, json.loads((folder / "config.json").read_text())


def finals(records: list[dict]) -> dict[tuple[str, int], dict[int, tuple[float, float]]]:
    """{(method, M): {seed: (cold-start test accuracy, final test accuracy)}}."""
    return {(method, m): {seed: (measure(run, "test_acc").start, measure(run, "test_acc").final)
                          for seed, run in seeds.items()}
            for (method, _, m), seeds in group_runs(records).items()}


def facts(records: list[dict]) -> dict:
    """{"gains": (every method's mean test gain >= TARGET_GAIN, the gains), (method, M): (mean paired difference in
    final test accuracy against the baseline, the numbers)}."""
    runs = finals(records)
    gains = {key: [f - s for s, f in seeds.values()] for key, seeds in runs.items()}
    out = {"gains": (all(np.mean(g) >= TARGET_GAIN for g in gains.values()),
                     ", ".join(f"{method} M={m} {np.mean(g):+.3f}" for (method, m), g in gains.items()))}
    base = {m: seeds for (method, m), seeds in runs.items() if method == BASELINE}
    for (method, m), seeds in runs.items():
        if method != BASELINE and m in base:
            d = [seeds[s][1] - base[m][s][1] for s in sorted(seeds) if s in base[m]]
            out[(method, m)] = (float(np.mean(d)), f"{np.mean(d):+.3f} ({sum(x > 0 for x in d)}/{len(d)} seeds ahead)")
    return out


def conclusions(committed: list[dict], records: list[dict]) -> list[tuple[str, str, str, bool]]:
    """[(a conclusion of the committed run, its numbers there, the numbers here, does it hold here)]."""
    there, here = facts(committed), facts(records)
    out = []
    if there["gains"][0]:
        out.append((f"every method gains at least +{TARGET_GAIN:g} over the cold start (test, mean over seeds)",
                    there["gains"][1], here["gains"][1], here["gains"][0]))
    for key, (d, numbers) in there.items():
        if key == "gains" or d == 0:
            continue
        method, m = key
        mine = here.get(key)
        out.append((f"{method} {'ahead of' if d > 0 else 'behind'} {BASELINE} at M = {m} (final test accuracy, "
                    f"paired by seed)", numbers, mine[1] if mine else "not run",
                    bool(mine) and (mine[0] > 0) == (d > 0) and mine[0] != 0))
    return out


def compare(records: list[dict], config: dict, out: Path) -> str:
    """Markdown: this run against the committed run of the same job, or why there is none to compare with."""
    folder = COMMITTED.get(config.get("task_preset", "short"))
    title = "## Against the committed run"
    if folder is None or not (folder / "config.json").exists():
        return f"{title}\n\nNo committed run of this task preset to compare with (docs/results/ is in the repository, " \
               f"not in an installed package)."
    if out.resolve() == folder.resolve():
        return f"{title}\n\nThis is the committed run ({folder.relative_to(ROOT)})."
    theirs, their_config = _read(folder)
    differs = [key for key in SAME if _setting(config, key) != _setting(their_config, key)]
    where = folder.relative_to(ROOT)
    if differs:
        return f"{title} ({where})\n\nNot compared: this job differs from the committed one in {', '.join(differs)}."
    same = [{k: v for k, v in r.items() if not k.startswith("time_")} for r in records] == \
        [{k: v for k, v in r.items() if not k.startswith("time_")} for r in theirs]
    mine, committed = finals(records), finals(theirs)
    lines = [f"{title} ({where})", "",
             "Every accuracy below depends on the machine: another CPU type or torch build rounds differently and the "
             "runs drift apart over 30 RL steps (a fresh clone on another CPU type gave cold-start val 0.286 against "
             "the committed 0.320, gains +0.39 to +0.47 against +0.31 to +0.38). The conclusions should not.", "",
             "| test split, mean over seeds | committed | this run | difference |", "|---|---|---|---|"]
    starts = [np.mean([s for s, _ in run[k].values()]) for run in (committed, mine) for k in list(run)[:1]]
    lines.append(f"| cold start | {starts[0]:.3f} | {starts[1]:.3f} | {starts[1] - starts[0]:+.3f} |")
    for key in committed:
        for what, index in (("final", 1), ("gain", None)):
            values = []
            for run in (committed, mine):
                seeds = run.get(key, {})
                values.append(np.mean([f - s if index is None else f for s, f in seeds.values()]) if seeds else np.nan)
            lines.append(f"| {key[0]} M={key[1]}, {what} | {values[0]:+.3f} | {values[1]:+.3f} | "
                         f"{values[1] - values[0]:+.3f} |" if index is None else
                         f"| {key[0]} M={key[1]}, {what} | {values[0]:.3f} | {values[1]:.3f} | "
                         f"{values[1] - values[0]:+.3f} |")
    lines += ["", "| the committed run's conclusion | committed | this run | holds |", "|---|---|---|---|"]
    for claim, there, here, holds in conclusions(theirs, records):
        lines.append(f"| {claim} | {there} | {here} | {'yes' if holds else '**no**'} |")
    lines += ["", "Records identical to the committed ones (times aside): "
              + ("yes: this machine computes the committed run bit for bit." if same else
                 "no: expected on another CPU type or torch build; compare the conclusions, not the digits.")]
    return "\n".join(lines)
