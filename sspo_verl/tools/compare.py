"""Compare real verl runs launched by the recipes: the testbed's plots and table from verl's own logs.

    python -m sspo_verl.tools.compare --run grpo_dapo=logs/grpo_s0.jsonl --run grpo_dapo=logs/grpo_s1.jsonl \\
        --run sspo=logs/sspo_s0.jsonl --run sspo=tensorboard_log/sspo/s1 --out reports/gsm8k

Each --run is METHOD=PATH; repeating a method adds a seed. PATH is any log verl writes:
  *.jsonl     trainer.logger=[...,file]  (VERL_FILE_LOGGER_PATH; lines {"step": N, "data": {...}})
  a folder or a *tfevents* file          trainer.logger=[...,tensorboard]  (TENSORBOARD_DIR)
  *.csv       a wandb export (a `_step` or `step` column, one column per metric)
  any other   the console log (stdout of main_ppo, lines `step:N - key:value - ...`)
or the testbed's metrics.jsonl (lines {"method", "seed", "step", ...}): --run PATH takes every method and
seed in it, --run METHOD=PATH that method's seeds.
Runs are aligned by trainer step. verl logs no importance-weight variance for its own losses; that panel
shows ppo_kl for every method and the variances only where a run logged them.
A bad input ends in one line that names it and the fix (exit status 2).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import re
import sys
from pathlib import Path

from .report import markdown_table, summarize, write_jsonl, write_report

FORMATS = "verl's file logger JSONL, a TensorBoard folder, a console log, a wandb CSV, or the testbed's metrics.jsonl"

VAL_CORE = re.compile(r"^val-core/.+/(acc|reward)/mean@\d+$")  # verl's headline validation metric
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
_CONSOLE = re.compile(r"step:(\d+) - (.*)$")
_NUMBER = re.compile(r"^(?:np\.\w+\()?([-+]?(?:[0-9.]+(?:e[-+]?\d+)?|nan|inf))\)?$", re.IGNORECASE)  # 0.5, np.float64(0.5)


class CompareError(ValueError):
    """A bad input; the message names it and the fix."""


def _json_lines(path: Path) -> list[tuple[int, dict]]:
    entries = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            raise CompareError(f"{path}, line {number}, is not JSON ({line[:60]!r}); pass one of: {FORMATS}") from None
        if not isinstance(entry, dict):
            raise CompareError(f"{path}, line {number}, is not a JSON object; pass one of: {FORMATS}")
        entries.append((number, entry))
    return entries


def is_testbed_records(path: Path) -> bool:
    """The testbed's metrics.jsonl: records that already carry method, seed and step."""
    if path.suffix != ".jsonl" or not path.is_file():
        return False
    entries = _json_lines(path)
    return bool(entries) and all({"method", "seed", "step"} <= entry.keys() for _, entry in entries)


def read_file_logger(path: Path) -> dict[int, dict]:
    steps: dict[int, dict] = {}
    for number, entry in _json_lines(path):
        if not isinstance(entry.get("step"), int) or not isinstance(entry.get("data"), dict):
            raise CompareError(f"{path}, line {number}, is neither verl's file logger format ({{\"step\": N, \"data\": "
                               f"{{...}}}}) nor the testbed's records ({{\"method\", \"seed\", \"step\", ...}}): "
                               f"found keys {sorted(entry)[:6]}; pass one of: {FORMATS}")
        steps.setdefault(entry["step"], {}).update(entry["data"])
    return steps


def read_console(path: Path) -> dict[int, dict]:
    """verl's console logger: `step:N - key:value - key:value`, possibly behind a Ray prefix."""
    steps: dict[int, dict] = {}
    for line in path.read_text(errors="replace").splitlines():
        match = _CONSOLE.search(line)
        if not match:
            continue
        data = steps.setdefault(int(match.group(1)), {})
        for cell in match.group(2).split(" - "):
            key, sep, value = cell.rpartition(":")
            number = _NUMBER.match(value.strip()) if sep else None
            if number:  # verl prints numbers with pprint: numpy scalars read `np.float64(0.5)`
                data[key] = float(number.group(1))
    return steps


def read_tensorboard(path: Path) -> dict[int, dict]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
    acc.Reload()
    steps: dict[int, dict] = {}
    for tag in acc.Tags()["scalars"]:
        for event in acc.Scalars(tag):
            steps.setdefault(int(event.step), {})[tag] = float(event.value)
    return steps


def read_wandb_csv(path: Path) -> dict[int, dict]:
    steps: dict[int, dict] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            step_key = "_step" if "_step" in row else "step" if "step" in row else None
            if step_key is None:
                raise CompareError(f"{path}: a wandb export needs a `_step` or `step` column; found {list(row)[:8]}: "
                                   f"export the run's history with its step")
            data = steps.setdefault(int(float(row[step_key])), {})
            for key, value in row.items():
                if key != step_key and value not in ("", None):
                    try:
                        data[key] = float(value)
                    except ValueError:
                        pass
    return steps


def read_log(path: str | Path) -> dict[int, dict]:
    """step -> {verl metric key: value} from any log format above."""
    path = Path(path)
    if not path.exists():
        raise CompareError(f"no log at {path}: pass the file or folder verl wrote ({FORMATS}; see --help)")
    if path.is_dir() or "tfevents" in path.name:
        steps = read_tensorboard(path)
    elif path.suffix == ".jsonl":
        steps = read_file_logger(path)
    elif path.suffix == ".csv":
        steps = read_wandb_csv(path)
    else:
        steps = read_console(path)
    if not steps:
        raise CompareError(f"{path}: no metrics found; pass one of: {FORMATS}")
    return steps


def to_records(method: str, seed: int, steps: dict[int, dict], val_key: str | None = None) -> list[dict]:
    """The testbed's record format, one per step, from verl's metric keys."""
    if val_key is None:
        val_keys = sorted({k for data in steps.values() for k in data if VAL_CORE.match(k)})
        val_key = val_keys[0] if val_keys else None
    records = []
    for step in sorted(steps):
        data = steps[step]
        record = {"method": method, "seed": seed, "step": step}
        for name, candidates in KEYS.items():
            key = next((k for k in candidates if k in data), None)
            value = float("nan") if key is not None and data[key] is None else data.get(key)  # orjson writes NaN as null
            if value is not None and (math.isfinite(value) or name == "pg_loss"):  # a non-finite loss is a collapse
                record[name] = value
        if val_key is not None and val_key in data:
            record["val_acc"] = data[val_key]
        record.update({k.removeprefix("actor/"): v for k, v in data.items() if k.startswith("actor/sspo/")})
        records.append(record)
    return records


def read_runs(specs: list[str], val_key: str | None) -> tuple[list[dict], dict[str, int]]:
    """Records of every --run, seeds numbered per method in the order given; (records, seeds per method)."""
    records, seeds = [], {}

    def add(method: str, runs: list[list[dict]]) -> None:
        for run in runs:
            seed = seeds[method] = seeds.get(method, 0) + 1
            records.extend({**r, "method": method, "seed": seed - 1} for r in run)

    for spec in specs:
        method, sep, path = ("", "", spec) if Path(spec).exists() else spec.partition("=")
        if is_testbed_records(Path(path)):
            by_run: dict[tuple, list[dict]] = {}
            for _, r in _json_lines(Path(path)):
                by_run.setdefault((r["method"], r["seed"]), []).append(r)
            found = list(dict.fromkeys(m for m, _ in by_run))  # the file's order: the testbed writes its baseline first
            if method and method not in found:
                raise CompareError(f"--run {spec!r}: {path} has no records of {method!r}; it has {', '.join(found)}")
            for m in found if not method else [method]:
                add(m, [run for (rm, _), run in sorted(by_run.items(), key=lambda kv: kv[0][1]) if rm == m])
        elif not sep or not method:
            raise CompareError(f"--run {spec!r}: expected METHOD=PATH, e.g. --run sspo=logs/sspo_seed0.jsonl "
                               f"(a bare PATH is for the testbed's metrics.jsonl)")
        else:
            add(method, [to_records(method, 0, read_log(path), val_key)])
    return records, seeds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sspo_verl.tools.compare", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, metavar="METHOD=PATH",
                        help="a run's log; repeat a method for more seeds (a bare PATH: the testbed's metrics.jsonl)")
    parser.add_argument("--out", required=True, help="folder for summary.md, the plots and records.jsonl")
    parser.add_argument("--baseline", default=None, help="method the others are measured against (default: first)")
    parser.add_argument("--val-key", default=None, help="held-out metric (default: the first val-core/.../mean@N)")
    args = parser.parse_args(argv)
    try:
        if importlib.util.find_spec("matplotlib") is None:
            raise CompareError("the plots need matplotlib: pip install 'sspo-verl[compare]' (or pip install matplotlib)")
        records, seeds = read_runs(args.run, args.val_key)
        baseline = args.baseline or records[0]["method"]
        if baseline not in seeds:
            raise CompareError(f"--baseline {baseline!r} is none of the runs' methods: {', '.join(seeds)}")
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_jsonl(records, out / "records.jsonl")
        runs = ", ".join(f"{m} x {n}" for m, n in seeds.items())
        command = " ".join(sys.argv[1:] if argv is None else argv)
        write_report(records, out, baseline, f"# runs: {runs}\n\n`python -m sspo_verl.tools.compare {command}`")
    except CompareError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # --out not writable, a log unreadable
        print(f"{parser.prog}: error: {exc.filename or ''}: {exc.strerror or exc}; check the path and its "
              f"permissions", file=sys.stderr)
        return 2
    print(markdown_table(summarize(records, baseline)))
    print(f"report: {out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
