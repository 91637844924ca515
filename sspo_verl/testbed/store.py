"""The run folder as a resumable store: a long job (the main job, the sweep) survives being killed.

    <out>/job.json                 what the job is (its identity: task, RL settings, cold start, runs) and each
                                   invocation's wall and CPU time; written before any work
    <out>/cold_start/seed<k>/      seed k's cold-start checkpoint, kept while the job runs (removed when it ends)
    <out>/cold_start/seed<k>.json  its measured quality (jobs.cold_start's info), kept
    <out>/runs/<run>.json.gz       one finished run (its records and wall time), written as it completes

Every file appears whole or not at all (written beside its place, then renamed), so a job killed at any moment
(SIGKILL included) leaves only finished pieces. Rerunning the same command on the same folder skips them and ends
with the same final report as an uninterrupted run; a different command on a folder that holds another job is
refused, naming what differs (`JobMismatchError`); a folder holding only another job's cold starts (a job the quality
gate stopped) is taken over. A job the gate stopped keeps its cold starts: the same command with --no-quality-gate
runs from them.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import resource
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from ..errors import SSPOError

CHECKPOINT_FILES = ("config.json", "model.safetensors", "tokenizer.json")  # what a cold start's folder must hold
WALL_LINE = "Wall time: "  # the one line of a job's summary.md that differs between an interrupted and an uninterrupted run


class JobMismatchError(SSPOError):
    """The run folder holds another job's runs."""


def write_atomic(path: Path, data: bytes) -> None:
    """`path` holds `data` whole, or keeps what it held: written to a temporary file beside it, then renamed."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    write_atomic(path, (json.dumps(obj, indent=2) + "\n").encode())


def _flat(obj, prefix: str = "") -> dict[str, object]:
    """{"rl.lr": 3e-5, ...}: a nested identity as dotted keys, to name what differs."""
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): obj}


def run_key(run) -> str:
    """A file name for a jobs.Run: readable, and unique through a hash of all its fields."""
    fields = asdict(run)
    digest = hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]
    return f"{run.method}-M{run.mini_batches}-seed{run.seed}-{digest}"


class RunFolder:
    """One job's run folder. `identity`: everything that decides the job's results (JSON types only); `command`:
    how the user started it (named in a refusal)."""

    def __init__(self, out: str | Path, identity: dict, command: str):
        self.out, self.identity, self.command = Path(out), json.loads(json.dumps(identity)), command
        self.runs_dir, self.cold_dir = self.out / "runs", self.out / "cold_start"
        self._started = time.perf_counter()
        self._cpu0 = self._cpu_s()

    # -- the job ------------------------------------------------------------------------------------------------
    def claim(self, log=print) -> int:
        """Take the folder for this job (before any work). Returns how many runs it already holds.
        A folder that holds another job's finished runs is refused (JobMismatchError); one that holds only another
        job's cold starts (e.g. a job stopped by the quality gate) is taken over, its cold starts discarded."""
        self.out.mkdir(parents=True, exist_ok=True)
        for stale in [*self.out.glob(".*.tmp*"), *self.runs_dir.glob(".*.tmp*"), *self.cold_dir.glob(".*.tmp*")]:
            stale.unlink(missing_ok=True)  # a write killed before its rename
        job = self.out / "job.json"
        self._invocations = []
        if job.exists():
            held = json.loads(job.read_text())
            differs = self._differences(held["identity"])
            if not differs:
                self._invocations = held.get("invocations", [])
                self.command = held.get("command", self.command)  # the command that started the job (a rerun may
                # differ in what does not change the results, e.g. --workers)
            elif finished := self.finished():
                raise JobMismatchError(
                    f"--out {self.out} holds {len(finished)} finished runs of another job "
                    f"(`{held.get('command', '?')}`), which differs from this command in {differs}: rerun that job's "
                    f"command to finish it, or give this one another --out")
            else:
                log(f"{self.out} held the cold starts of another job (`{held.get('command', '?')}`, which differs in "
                    f"{differs}) and no finished run: replacing them")
                shutil.rmtree(self.cold_dir, ignore_errors=True)
        elif self.runs_dir.exists() or self.cold_dir.exists():
            raise JobMismatchError(f"--out {self.out} holds runs without a job.json (not a resumable job's folder): "
                                   f"give this command another --out")
        self._invocations.append({"started": time.strftime("%Y-%m-%d %H:%M:%S"), "wall_s": 0.0, "cpu_s": 0.0,
                                  "runs_finished": 0})
        self._save_job()
        return len(self.finished())

    def _differences(self, held: dict) -> str:
        """'' when `held` is this job's identity, else the settings that differ ("task.n_operands: 3 there, 12 here")."""
        mine, theirs = _flat(self.identity), _flat(held)
        keys = [k for k in sorted(set(mine) | set(theirs)) if mine.get(k, "(absent)") != theirs.get(k, "(absent)")]
        shown = "; ".join(f"{k}: {theirs.get(k, '(absent)')} there, {mine.get(k, '(absent)')} here" for k in keys[:6])
        return f"{len(keys)} setting(s) ({shown}{'; ...' if len(keys) > 6 else ''})" if keys else ""

    def _cpu_s(self) -> float:
        usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        return sum(u.ru_utime + u.ru_stime for u in usage)

    def _save_job(self) -> None:
        now = self._invocations[-1]
        now["wall_s"] = time.perf_counter() - self._started
        now["cpu_s"] = self._cpu_s() - self._cpu0
        write_json(self.out / "job.json", {"command": self.command, "identity": self.identity,
                                           "invocations": self._invocations})

    @property
    def invocations(self) -> list[dict]:
        """Each invocation of the job: when it started, its wall and CPU seconds, the runs it finished."""
        self._save_job()
        return list(self._invocations)

    def finish(self) -> None:
        """The job is complete: drop the cold-start checkpoints (model weights), keep their measured quality."""
        for path in self.cold_dir.glob("seed*"):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
        self._save_job()

    # -- cold starts ---------------------------------------------------------------------------------------------
    def cold_start_path(self, seed: int) -> Path:
        return self.cold_dir / f"seed{seed}"

    def cold_start_info(self, seed: int, need_weights: bool) -> dict | None:
        """Seed's finished cold start (its info), or None when it must be built (again, when its weights are
        needed and gone)."""
        info, weights = self.cold_dir / f"seed{seed}.json", self.cold_start_path(seed)
        # a checkpoint without its tokenizer would load verl's fallback, which encodes every prompt to nothing
        if not info.exists() or (need_weights and not all((weights / name).exists() for name in CHECKPOINT_FILES)):
            return None
        return json.loads(info.read_text())

    def save_cold_start(self, seed: int, info: dict) -> None:
        self.cold_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.cold_dir / f"seed{seed}.json", info)

    # -- runs ----------------------------------------------------------------------------------------------------
    def finished(self) -> set[str]:
        return {p.name.removesuffix(".json.gz") for p in self.runs_dir.glob("*.json.gz")} if self.runs_dir.exists() \
            else set()

    def result(self, run) -> dict | None:
        path = self.runs_dir / f"{run_key(run)}.json.gz"
        if not path.exists():
            return None
        result = json.loads(gzip.decompress(path.read_bytes()))
        if result["run"] != json.loads(json.dumps(asdict(run))):
            raise JobMismatchError(f"{path} holds run {result['run']}, not {asdict(run)}: remove it and rerun")
        return result

    def save_result(self, run, result: dict) -> None:
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        # mtime 0: the same result gives the same bytes
        write_atomic(self.runs_dir / f"{run_key(run)}.json.gz", gzip.compress(json.dumps(result).encode(), mtime=0))
        self._invocations[-1]["runs_finished"] += 1
        self._save_job()
