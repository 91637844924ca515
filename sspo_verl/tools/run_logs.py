"""Reading a run's log, in any format verl writes, or the testbed's records (for `sspo_verl.tools.compare`).

    read_log(path)       step -> {verl metric key: value}, from verl's file logger, TensorBoard, console or a wandb
                         CSV export
    testbed_records(path)  the testbed's records ({"method", "seed", "step", ...} per line), or None for a verl log
    locate(path)         the log a --run PATH names: the file itself, or what a run folder holds

A run folder holds metrics.jsonl or metrics.jsonl.gz (verl's file logger as recipes/cpu_tiny.sh sets it, or the
testbed's records), else TensorBoard event files, directly or in tensorboard/. Every bad input is a CompareError
whose one line names the file (and line) and the fix.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
from pathlib import Path

from ..errors import SSPOError

FORMATS = ("verl's file logger JSONL (or .jsonl.gz), a TensorBoard folder, a console log, a wandb CSV, the testbed's "
           "metrics.jsonl(.gz), or a run folder holding one of them")
RECORD_FILES = ("metrics.jsonl", "metrics.jsonl.gz")  # what a run folder's log is called (cpu_tiny, the testbed)
_CONSOLE = re.compile(r"step:(\d+) - (.*)$")
_NUMBER = re.compile(r"^(?:np\.\w+\()?([-+]?(?:[0-9.]+(?:e[-+]?\d+)?|nan|inf))\)?$", re.IGNORECASE)  # 0.5, np.float64(0.5)


class CompareError(SSPOError):
    """A bad input to the comparison; the message names it and the fix."""


def _has_events(folder: Path) -> bool:
    return any("tfevents" in p.name for p in folder.iterdir() if p.is_file())


def locate(path: str | Path) -> Path:
    """The log file (or TensorBoard folder) that `path` names; a run folder gives the log inside it."""
    path = Path(path)
    if not path.exists():
        raise CompareError(f"no log at {path}: pass the file or folder verl wrote ({FORMATS}; see --help)")
    if not path.is_dir():
        return path
    for name in RECORD_FILES:
        if (path / name).is_file():
            return path / name
    if _has_events(path):
        return path
    if (path / "tensorboard").is_dir() and _has_events(path / "tensorboard"):
        return path / "tensorboard"
    raise CompareError(f"{path} is a folder with no {' or '.join(RECORD_FILES)} and no TensorBoard events (directly "
                       f"or in tensorboard/): pass the log itself ({FORMATS})")


def _text(path: Path) -> str:
    if path.suffix == ".gz":
        with gzip.open(path, "rt", errors="replace") as f:
            return f.read()
    return path.read_text(errors="replace")


def _json_lines(path: Path) -> list[tuple[int, dict]]:
    entries = []
    for number, line in enumerate(_text(path).splitlines(), 1):
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


def _is_jsonl(path: Path) -> bool:
    return path.name.endswith((".jsonl", ".jsonl.gz"))


def testbed_records(path: Path) -> list[dict] | None:
    """The testbed's records (every line carries method, seed and step), or None when `path` is not such a file."""
    if not path.is_file() or not _is_jsonl(path):
        return None
    entries = _json_lines(path)
    if entries and all({"method", "seed", "step"} <= entry.keys() for _, entry in entries):
        return [entry for _, entry in entries]
    return None


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
    for line in _text(path).splitlines():
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
                        pass  # a text column (run name, tags): not a metric
    return steps


def read_log(path: str | Path) -> dict[int, dict]:
    """step -> {verl metric key: value} from any log format above (`path` located first)."""
    path = locate(path)
    if path.is_dir() or "tfevents" in path.name:
        steps = read_tensorboard(path)
    elif _is_jsonl(path):
        steps = read_file_logger(path)
    elif path.suffix == ".csv":
        steps = read_wandb_csv(path)
    else:
        steps = read_console(path)
    if not steps:
        raise CompareError(f"{path}: no metrics found; pass one of: {FORMATS}")
    return steps
