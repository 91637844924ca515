"""Compare runs: the testbed's table and plots from the logs verl writes for the recipes' runs, or from the testbed's
own records.

    python -m sspo_verl.tools.compare --run grpo_dapo=runs/cpu_tiny/grpo_dapo --run sspo=runs/cpu_tiny/sspo --out reports/cpu_tiny
    python -m sspo_verl.tools.compare --run docs/results/sweep-cpu/metrics.jsonl.gz --where M=16 --out reports/sweep_m16

Each --run is METHOD=PATH; repeating a method adds a seed. PATH is any log verl writes:
  *.jsonl, *.jsonl.gz      trainer.logger=[...,file]  (VERL_FILE_LOGGER_PATH; lines {"step": N, "data": {...}})
  *tfevents*, or a folder  trainer.logger=[...,tensorboard]  (TENSORBOARD_DIR)
  *.csv                    a wandb export (a `_step` or `step` column, one column per metric)
  any other file           the console log (stdout of main_ppo, lines `step:N - key:value - ...`)
  a run folder             its metrics.jsonl(.gz), else its TensorBoard events (directly or in tensorboard/)
or the testbed's records (its metrics.jsonl, a sweep's metrics.jsonl.gz: lines {"method", "seed", "step", ...}):
--run PATH takes every run in it, --run METHOD=PATH that method's runs.

Runs are grouped by everything that tells them apart. A verl log is one run of the METHOD it is given as; runs
given as one METHOD whose Hydra configs differ in a setting (loss, clip or temperature, batch shape, lr, steps, model,
data) are refused. The testbed's records carry their method, knob, M (mini-batches) and lr: each combination is one
row, named by what varies (`sspo [tau 4.05/4.48, M=16]`); records of files whose config.json differ (task, steps,
cold start) are told apart by their folder. --where KEY=VALUE (knob, M, lr) keeps the testbed's runs that match.

The held-out metric (table, plots) is named in the summary. By default:
  the testbed's records        val_acc (its held-out val split)
  a verl run                   val-core/<its training data source>/{acc,reward}/mean@N: the data_source column of
                               data.train_files, read from the run's Hydra config (.hydra/config.yaml in the run
                               folder, where recipes/cpu_tiny.sh's hydra.run.dir puts it)
  a verl run with no config    its one val-core/.../mean@N; several are an error that lists them
--val-key KEY names another (any key the runs log, e.g. test_acc or val-aux/openai/gsm8k/acc_tolerant/mean@1);
every run must log it. Runs whose held-out metrics differ (different tasks) are refused.
The baseline (steps to its final accuracy) is grpo_dapo, the testbed's, when present, else the first run given.
Runs are aligned by trainer step. verl logs no importance-weight variance for its own losses; that panel
shows ppo_kl for every method and the variances only where a run logged them. Past 20 rows there are no plots.
Writes summary.md (the table, how the metric was chosen, the command), the plots and records.jsonl (the records
compared; val_acc holds the held-out metric) to --out.
A bad input ends in one line that names it and the fix (exit status 2).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .. import cli
from ..errors import require_module
from .report import markdown_table, summarize, write_jsonl, write_report
from .run_config import RunConfig, find_hydra_config, read_testbed_config, read_verl_config
from .run_logs import CompareError, locate, read_log, testbed_records

__all__ = ["CompareError", "main", "read_log", "to_records"]

VAL_CORE = re.compile(r"^val-core/(.+)/(acc|reward)/mean@\d+$")  # verl's headline validation metric, per data source
TESTBED_HELD_OUT = "val_acc"
KEYS = {  # record key <- verl keys, first present wins
    "reward": ["critic/score/mean", "critic/rewards/mean"],
    "entropy": ["actor/entropy"],
    "ppo_kl": ["actor/ppo_kl"],
    "grad_norm": ["actor/grad_norm"],
    "pg_clipfrac": ["actor/pg_clipfrac"],
    "pg_loss": ["actor/pg_loss"],
    "token_iw_var": ["actor/token_iw_var", "testbed/token_iw_var"],
    "seq_iw_var": ["actor/seq_iw_var", "testbed/seq_iw_var"],
    "response_len": ["response_length/mean"],
}
TAGS = {"knob": "knob", "M": "mini_batches", "lr": "lr_setting"}  # --where KEY -> the testbed record's key


def default_baseline() -> str:
    from ..testbed.run import BASELINE  # light: the testbed's CLI module imports no torch

    return BASELINE


@dataclass
class Run:
    """One run: a verl log (steps) or one (method, knob, M, lr, seed) of the testbed's records."""

    name: str  # the method: --run METHOD for a verl log, the records' method for the testbed's
    log: Path  # the file (or TensorBoard folder) read
    spec: str  # the --run argument
    tags: dict[str, str] = field(default_factory=dict)  # what else tells it apart (the testbed's knob, M, lr; run)
    seed: int | None = None  # the testbed's seed
    steps: dict[int, dict] | None = None  # a verl log: step -> metrics
    records: list[dict] | None = None  # the testbed's records of this run
    config: RunConfig | None = None  # its Hydra config (verl) or config.json (testbed), when found

    @property
    def is_testbed(self) -> bool:
        return self.records is not None

    def logged(self) -> set[str]:
        rows = self.records if self.is_testbed else self.steps.values()
        return {key for row in rows for key in row}


def _describe(name: str, tags: dict[str, str]) -> str:
    return f"{name} [{', '.join(f'{k}={v!r}' for k, v in tags.items())}]" if tags else name


def _testbed_tags(record: dict, config: RunConfig | None) -> dict[str, str]:
    tags = {}
    if "knob" in record:
        tags["knob"] = str(record["knob"])
    if "mini_batches" in record:
        tags["M"] = str(record["mini_batches"])
    lr = record.get("lr_setting", config.lr if config else None)
    if lr is not None:
        tags["lr"] = f"{lr:g}"
    return tags


def testbed_runs(spec: str, method: str, log: Path, records: list[dict]) -> list[Run]:
    """The runs in a testbed records file (one per method, knob, M, lr and seed), in the file's order."""
    config = read_testbed_config(log)
    by_run: dict[tuple, list[dict]] = {}
    for r in records:
        tags = _testbed_tags(r, config)
        by_run.setdefault((r["method"], tuple(tags.items()), r["seed"]), []).append(r)
    for (name, tags, seed), rows in by_run.items():
        steps = [r["step"] for r in rows]
        if len(steps) != len(set(steps)):
            twice = next(s for s in steps if steps.count(s) > 1)
            raise CompareError(f"{log}: step {twice} of {_describe(name, dict(tags))} seed {seed} appears twice: the "
                               f"file mixes runs that nothing in their records tells apart (method, knob, M, lr, "
                               f"seed); split it into one file per experiment")
    found = list(dict.fromkeys(name for name, _, _ in by_run))  # the testbed writes its baseline first
    if method and method not in found:
        raise CompareError(f"--run {spec!r}: {log} has no records of {method!r}; it has {', '.join(found)}")
    return [Run(name, log, spec, dict(tags), seed, records=sorted(rows, key=lambda r: r["step"]), config=config)
            for (name, tags, seed), rows in by_run.items() if not method or name == method]


def _not_method_path(spec: str) -> CompareError:
    return CompareError(f"--run {spec!r}: expected METHOD=PATH, e.g. --run sspo=runs/cpu_tiny/sspo (a bare PATH is "
                        f"for the testbed's metrics.jsonl)")


def parse_run(spec: str) -> tuple[str, str]:
    """(METHOD, PATH) of a --run argument; METHOD is '' for a bare path (the testbed's records)."""
    if Path(spec).exists():
        return "", spec
    method, sep, path = spec.partition("=")
    if not (sep and method and path):
        raise _not_method_path(spec)
    return method, path


def load_runs(spec: str) -> list[Run]:
    """The runs one --run argument names."""
    method, path = parse_run(spec)
    log = locate(path)
    records = testbed_records(log)
    if records is not None:
        return testbed_runs(spec, method, log, records)
    if not method:  # a verl log is a run of the method it is given as
        raise _not_method_path(spec)
    config = find_hydra_config(log)
    return [Run(method, log, spec, steps=read_log(log), config=read_verl_config(config) if config else None)]


def _same(a: str, b: str) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    except ValueError:
        return a == b


def _number_first(value: str) -> tuple:
    try:
        return 0, float(value), ""
    except ValueError:
        return 1, 0.0, value


def parse_where(condition: str) -> tuple[str, str]:
    key, sep, wanted = condition.partition("=")
    if not sep or key not in TAGS:
        raise CompareError(f"--where {condition!r}: expected KEY=VALUE with KEY one of {', '.join(TAGS)} "
                           f"(e.g. --where M=16)")
    return key, wanted


def apply_where(runs: list[Run], where: list[str]) -> list[Run]:
    """The testbed runs whose tags match every --where KEY=VALUE."""
    for condition in where:
        key, wanted = parse_where(condition)
        verl = next((run for run in runs if not run.is_testbed), None)
        if verl is not None:
            raise CompareError(f"--where {condition!r} selects among the testbed's records; --run {verl.spec!r} is a "
                               f"verl log (name its runs apart with METHOD= instead)")
        kept = [run for run in runs if key in run.tags and _same(run.tags[key], wanted)]
        if not kept:
            values = sorted({run.tags[key] for run in runs if key in run.tags}, key=_number_first)
            raise CompareError(f"--where {condition!r} matches no run; the runs' {key} values: "
                               f"{', '.join(map(repr, values)) or 'none (their records carry no ' + TAGS[key] + ')'}")
        runs = kept
    return runs


def tell_testbed_files_apart(runs: list[Run]) -> None:
    """Records from testbed files whose config.json settings differ (or cannot be read) are different experiments:
    tag each run with its folder, so that they are never pooled as seeds of one row."""
    testbed = [run for run in runs if run.is_testbed]
    settings = {run.log.resolve(): repr(run.config.settings if run.config else None) for run in testbed}
    if len(set(settings.values())) <= 1:
        return
    folders = [log.parent.name for log in settings]
    for run in testbed:
        folder = run.log.resolve().parent
        run.tags["run"] = folder.name if folders.count(folder.name) == 1 else str(folder)


@dataclass
class HeldOut:
    key: str | None  # the record key (the testbed's) or verl metric key; None: no run logs one
    why: str  # how it was chosen


def held_out_of(run: Run, val_key: str | None) -> HeldOut:
    """The run's held-out metric: --val-key if given (it must be logged), else the documented default."""
    logged = run.logged()
    if run.is_testbed:
        candidates = sorted(k for k in logged if k.endswith("_acc"))
        key, why = val_key or TESTBED_HELD_OUT, "given with --val-key" if val_key else "the testbed's held-out val split"
    else:
        candidates = sorted(k for k in logged if VAL_CORE.match(k))
        if val_key:
            key, why = val_key, "given with --val-key"
        else:
            return _verl_default(run, candidates)
    if key not in logged:
        raise CompareError(f"--val-key {key!r} is not logged by {run.log} ({_describe(run.name, run.tags)}); its held-out "
                           f"metrics: {', '.join(candidates) or 'none'}" + ("" if run.is_testbed else
                           " (any val-aux/... key it logs works too)"))
    return HeldOut(key, why)


def _verl_default(run: Run, candidates: list[str]) -> HeldOut:
    """val-core/<the run's training data source>/.../mean@N, or the run's only val-core key."""
    config = run.config
    if not candidates:
        return HeldOut(None, "none: the run logs no val-core key")
    if config is not None and config.train_sources is not None:
        mine = [k for k in candidates if VAL_CORE.match(k).group(1) in config.train_sources]
        sources = ", ".join(config.train_sources)
        if len(mine) == 1:
            return HeldOut(mine[0], f"the run's training data source {sources}, from data.train_files in {config.path}")
        raise CompareError(
            f"{run.log} trains on {sources} (data.train_files in {config.path}) and logs "
            f"{'no held-out metric of it' if not mine else 'one held-out metric per training source'}: "
            f"{', '.join(mine or candidates)}; pass --val-key with the one to compare")
    if len(candidates) == 1:
        return HeldOut(candidates[0], "the run's only val-core key")
    why = config.why_no_sources if config else ("no .hydra/config.yaml beside it to tell its training data (launch "
                                                "main_ppo with hydra.run.dir=<run folder>)")
    raise CompareError(f"{run.log} logs several held-out metrics ({', '.join(candidates)}) and {why}: pass --val-key "
                       f"with the one to compare (its training task's)")


def choose_held_out(runs: list[Run], val_key: str | None) -> HeldOut:
    """The one held-out metric of every run; runs whose default metrics differ compare different tasks."""
    chosen = [(run, held_out_of(run, val_key)) for run in runs]
    keys = {h.key for _, h in chosen}
    if len(keys) > 1:
        by_key = {}
        for run, h in chosen:
            by_key.setdefault(h.key, f"{h.key} ({run.log})")
        raise CompareError(f"the runs' held-out metrics differ: {'; '.join(by_key.values())}: compare runs of one "
                           f"task, or pass --val-key with a key every run logs")
    return chosen[0][1]


def to_records(method: str, seed: int, steps: dict[int, dict], val_key: str | None) -> list[dict]:
    """The testbed's record format, one per step, from verl's metric keys; val_acc holds `val_key` (None: none)."""
    records = []
    for step in sorted(steps):
        data = steps[step]
        record = {"method": method, "seed": seed, "step": step}
        for name, candidates in KEYS.items():
            key = next((k for k in candidates if k in data), None)
            value = float("nan") if key is not None and data[key] is None else data.get(key)  # orjson writes NaN as null
            if value is not None and (math.isfinite(value) or name == "pg_loss"):  # a non-finite loss is a collapse
                record[name] = value
        if val_key is not None and data.get(val_key) is not None:
            record["val_acc"] = data[val_key]
        record.update({k.removeprefix("actor/"): v for k, v in data.items() if k.startswith("actor/sspo/")})
        records.append(record)
    return records


def _check_settings(group: list[Run]) -> None:
    """Runs given as one METHOD must differ in nothing but their seed (their Hydra configs, where found)."""
    configured = [run for run in group if run.config is not None and not run.is_testbed]
    for run in configured[1:]:
        first = configured[0]
        differ = [k for k in first.config.settings if first.config.settings[k] != run.config.settings.get(k)]
        if differ:
            key, more = differ[0], f", and {len(differ) - 1} more setting(s)" if len(differ) > 1 else ""
            raise CompareError(
                f"--run {first.spec!r} and --run {run.spec!r} differ in {key} ({first.config.settings[key]} vs "
                f"{run.config.settings.get(key)}{more}): they are not seeds of one method; give them different names, "
                f"e.g. --run {run.name}_2={run.spec.partition('=')[2]}")


def group_runs(runs: list[Run]) -> dict[str, list[Run]]:
    """label -> its runs (seeds), in the order given. A label is the method, with the tags that vary among that
    method's groups: `sspo [tau 4.05/4.48, M=16]`."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault((run.name, tuple(run.tags.items())), []).append(run)
    labels = {}
    for (name, tags), members in groups.items():
        seen = set()
        for run in members:
            if (run.log.resolve(), run.seed) in seen:
                raise CompareError(f"--run {run.spec!r}: {run.log}'s {_describe(name, dict(tags))} runs are given "
                                   f"twice; pass each log once")
            seen.add((run.log.resolve(), run.seed))
        _check_settings(members)
        siblings = [dict(t) for n, t in groups if n == name]
        varying = [k for k in dict(tags) if len({s.get(k) for s in siblings}) > 1]
        shown = [(dict(tags)[k] or "no knob") if k in ("knob", "run") else f"{k}={dict(tags)[k]}" for k in varying]
        labels[(name, tags)] = f"{name} [{', '.join(shown)}]" if shown else name
    return {labels[key]: members for key, members in groups.items()}


def pick_baseline(groups: dict[str, list[Run]], wanted: str | None) -> str:
    """--baseline as a label or as a method with one group; default the testbed's baseline, else the first run."""
    name = wanted or default_baseline()
    if name in groups:
        return name
    matches = [label for label, members in groups.items() if members[0].name == name]
    if len(matches) == 1:
        return matches[0]
    if matches:
        what = f"--baseline {name!r}" if wanted else f"the default baseline, {name!r} (the testbed's),"
        raise CompareError(f"{what} matches {len(matches)} groups: {'; '.join(matches)}: pass --baseline with one of "
                           f"them (or keep fewer runs with --where)")
    if wanted:
        raise CompareError(f"--baseline {wanted!r} is none of the runs' methods: {'; '.join(groups)}")
    return next(iter(groups))


def records_of(groups: dict[str, list[Run]], held_out: HeldOut) -> list[dict]:
    """Every run's records under its label, seeds numbered 0.. per label in the order given; val_acc holds the
    held-out metric."""
    records = []
    for label, members in groups.items():
        for seed, run in enumerate(members):
            if not run.is_testbed:
                records += to_records(label, seed, run.steps, held_out.key)
                continue
            for r in run.records:
                rec = {k: v for k, v in r.items() if k != TESTBED_HELD_OUT}
                if r.get(held_out.key) is not None:
                    rec[TESTBED_HELD_OUT] = r[held_out.key]
                records.append({**rec, "method": label, "seed": seed})
    return records


def compare(args: argparse.Namespace, argv: list[str]) -> None:
    for spec in args.run:  # every argument before any work
        parse_run(spec)
    for condition in args.where:
        parse_where(condition)
    require_module("matplotlib", "compare", "python -m sspo_verl.tools.compare's plots")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CompareError(f"--out {out} is a file; pass a folder for summary.md, the plots and records.jsonl")
    runs = [run for spec in args.run for run in load_runs(spec)]
    runs = apply_where(runs, args.where)
    tell_testbed_files_apart(runs)
    held_out = choose_held_out(runs, args.val_key)
    groups = group_runs(runs)
    baseline = pick_baseline(groups, args.baseline)
    records = records_of(groups, held_out)
    metric = f"`{held_out.key}`" if held_out.key else "held-out acc (none logged)"
    header = (f"# runs: {', '.join(f'{label} x {len(members)}' for label, members in groups.items())}\n\n"
              f"Held-out metric: {metric}, {held_out.why}. Baseline: {baseline}.\n\n"
              f"`python -m sspo_verl.tools.compare {' '.join(argv)}`")
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_jsonl(records, out / "records.jsonl")
        write_report(records, out, baseline, header, held_out=metric)
    except OSError as exc:  # --out not writable
        raise CompareError(f"{exc.filename or out}: {exc.strerror or exc}; check the path and its permissions") from None
    print(markdown_table(summarize(records, baseline), held_out=metric))
    print(f"held-out metric: {held_out.key or 'none logged'} ({held_out.why})")
    print(f"report: {out / 'summary.md'}")


def main(argv=None) -> int:
    parser = cli.ArgumentParser(prog="python -m sspo_verl.tools.compare", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, metavar="METHOD=PATH",
                        help="a run's log or run folder; repeat a method for more seeds (a bare PATH: the testbed's "
                             "records)")
    parser.add_argument("--out", required=True, help="folder for summary.md, the plots and records.jsonl")
    parser.add_argument("--baseline", default=None,
                        help="method (or row label) the others are measured against (default: grpo_dapo, else the first)")
    parser.add_argument("--val-key", default=None, help="held-out metric (default: the runs' training task's; see below)")
    parser.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                        help="keep the testbed's runs with this knob, M or lr (repeatable)")
    args = parser.parse_args(argv)
    return cli.run(parser.prog, compare, args, sys.argv[1:] if argv is None else list(argv))


if __name__ == "__main__":
    raise SystemExit(main())
