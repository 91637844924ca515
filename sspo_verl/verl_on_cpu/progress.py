"""One short console line per training step, read from verl's file logger while main_ppo runs (recipes/cpu_tiny.sh).

    python -m sspo_verl.verl_on_cpu.progress RUN_DIR/metrics.jsonl --steps 30 --val-source sspo/arithmetic --watch PID

verl's console logger prints every metric of a step on one line (about 56 on the CPU recipe), so the reward is
hard to find. The recipe logs to verl's `file` and `tensorboard` backends (every metric, as before) and runs this
beside main_ppo: it follows the file logger's JSONL (one record per step, written unbuffered) and prints

    step 0/30: val sspo/arithmetic 0.344
    step 3/30: reward 0.312, 3.1 s
    step 10/30: reward 0.359, val sspo/arithmetic 0.453, 3.4 s

It stops after its final read on SIGTERM (the recipe sends it when main_ppo has exited), or when the process
`--watch` names is gone. Light on purpose (no torch, no verl): it shares the machine with the run.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from .. import cli

REWARD = "critic/score/mean"  # verl's batch reward: the mean score of the step's samples
STEP_SECONDS = "timing_s/step"
POLL_S = 0.5


def val_accuracy(data: dict, source: str | None) -> dict[str, float]:
    """{data source: greedy val accuracy} from verl's `val-core/<source>/acc/mean@N` metrics (all, or `source`)."""
    found = {}
    for key, value in data.items():
        if key.startswith("val-core/") and "/acc/mean@" in key:
            name = key[len("val-core/"):key.index("/acc/mean@")]
            if source is None or name == source:
                found[name] = value
    return found


def line(record: dict, steps: str | None, source: str | None) -> str:
    """The console line of one file-logger record ({"step": N, "data": {metric: value}})."""
    data = record["data"]
    parts = []
    if REWARD in data:
        parts.append(f"reward {data[REWARD]:.3f}")
    parts += [f"val {name} {value:.3f}" for name, value in val_accuracy(data, source).items()]
    if STEP_SECONDS in data:
        parts.append(f"{data[STEP_SECONDS]:.1f} s")
    return f"step {record['step']}{f'/{steps}' if steps else ''}: {', '.join(parts) or 'logged'}"


class Follower:
    """The complete lines appended to a file since the last read (the file may not exist yet)."""

    def __init__(self, path: Path):
        self.path, self.offset, self.partial = path, 0, b""

    def new_records(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        *complete, self.partial = (self.partial + chunk).split(b"\n")
        return [json.loads(raw) for raw in complete if raw.strip()]


def _alive(pid: int | None) -> bool:
    """Whether process `pid` still runs (an exited one that its parent has not reaped yet does not)."""
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (not Linux): os.kill said it exists
    return state != "Z"


class _Stop(Exception):
    pass


def _stop(signum, frame):
    raise _Stop


def follow(path: Path, steps: str | None, source: str | None, watch: int | None, out=sys.stdout) -> None:
    """Print a line per record until SIGTERM or until `watch` exits, then once more for what is left."""
    follower = Follower(path)
    signal.signal(signal.SIGTERM, _stop)
    try:
        while _alive(watch):
            for record in follower.new_records():
                print(line(record, steps, source), file=out, flush=True)
            time.sleep(POLL_S)
    except (_Stop, KeyboardInterrupt):
        pass
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for record in follower.new_records():
        print(line(record, steps, source), file=out, flush=True)


def main(argv=None) -> int:
    parser = cli.ArgumentParser(prog="python -m sspo_verl.verl_on_cpu.progress", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="verl's file-logger JSONL (VERL_FILE_LOGGER_PATH)")
    parser.add_argument("--steps", default=None, help="total training steps, shown as step k/N (as given)")
    parser.add_argument("--val-source", default=None, help="show only this data source's val accuracy")
    parser.add_argument("--watch", type=int, default=None, help="stop when the process with this id has exited")
    args = parser.parse_args(argv)
    follow(args.path, args.steps, args.val_source, args.watch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
