"""Compare real verl runs launched by the recipes: the testbed's plots and table from verl's own logs.

    python -m sspo_verl.compare --run grpo_dapo=logs/grpo_s0.jsonl --run grpo_dapo=logs/grpo_s1.jsonl \\
        --run sspo=logs/sspo_s0.jsonl --run sspo=tensorboard_log/sspo/s1 --out reports/gsm8k

Each --run is METHOD=PATH; repeating a method adds a seed. PATH is any log verl writes:
  *.jsonl     trainer.logger=[...,file]  (VERL_FILE_LOGGER_PATH; lines {"step": N, "data": {...}})
  a folder or a *tfevents* file          trainer.logger=[...,tensorboard]  (TENSORBOARD_DIR)
  *.csv       a wandb export (a `_step` or `step` column, one column per metric)
  any other   the console log (stdout of main_ppo, lines `step:N - key:value - ...`)
Runs are aligned by trainer step. verl logs no importance-weight variance for its own losses; that panel
shows ppo_kl for every method and the variances only where a run logged them.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from pathlib import Path

from .report import markdown_table, summarize, write_jsonl, write_report

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


def read_file_logger(path: Path) -> dict[int, dict]:
    steps: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            steps.setdefault(int(entry["step"]), {}).update(entry["data"])
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
                raise ValueError(f"{path}: a wandb export needs a `_step` or `step` column; found {list(row)[:8]}")
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
        raise FileNotFoundError(f"no log at {path}: pass the file or folder verl wrote (see --help)")
    if path.is_dir() or "tfevents" in path.name:
        steps = read_tensorboard(path)
    elif path.suffix == ".jsonl":
        steps = read_file_logger(path)
    elif path.suffix == ".csv":
        steps = read_wandb_csv(path)
    else:
        steps = read_console(path)
    if not steps:
        raise ValueError(f"{path}: no metrics found; is it a verl log (file, tensorboard, console or wandb csv)?")
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sspo_verl.compare", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, metavar="METHOD=PATH",
                        help="a run's log; repeat a method for more seeds")
    parser.add_argument("--out", required=True, help="folder for summary.md, the plots and records.jsonl")
    parser.add_argument("--baseline", default=None, help="method the others are measured against (default: first)")
    parser.add_argument("--val-key", default=None, help="held-out metric (default: the first val-core/.../mean@N)")
    args = parser.parse_args(argv)

    records, seeds = [], {}
    for spec in args.run:
        method, sep, path = spec.partition("=")
        if not sep or not method or not path:
            parser.error(f"--run {spec!r}: expected METHOD=PATH, e.g. --run sspo=logs/sspo_seed0.jsonl")
        seed = seeds[method] = seeds.get(method, -1) + 1
        records += to_records(method, seed, read_log(path), args.val_key)
    baseline = args.baseline or args.run[0].partition("=")[0]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(records, out / "records.jsonl")
    runs = ", ".join(f"{m} x {n + 1}" for m, n in seeds.items())
    write_report(records, out, baseline, f"# verl runs: {runs}\n\n`python -m sspo_verl.compare {' '.join(sys.argv[1:] if argv is None else argv)}`")
    print(markdown_table(summarize(records, baseline)))
    print(f"report: {out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
