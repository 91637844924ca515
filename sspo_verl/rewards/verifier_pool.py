"""Run a verifier in processes of its own, with a time bound per answer that holds in any calling thread.

verl calls the reward function from a thread (NaiveRewardManager.run_single -> loop.run_in_executor), in a Ray
actor. A time bound built on `signal.alarm` (math-verify's default) only works in a main thread, and a thread
cannot be stopped from outside. So the check runs in a worker process, in that process's main thread:

- soft bound: the worker arms `signal.setitimer` for `budget_s` around each check and answers {"timeout": true}
  when it fires; the worker stays alive (sympy's loops are Python, so the signal lands within microseconds);
- hard bound: the caller waits `budget_s + HARD_GRACE_S` at most; a worker stuck in C code past that is killed
  (SIGKILL) and replaced on the next call, and the answer counts as timed out.

Protocol (`serve` is the worker side): one JSON object per line. The worker first says {"ready": true} or
{"fatal": "<why>"} (a missing package, a failed self-test), then answers each request with the dict its `check`
returns, {"timeout": true}, or {"error": "<Type: message>", "traceback": "..."}. It exits when its stdin closes,
so it never outlives the process that started it. POSIX only (select on pipes, SIGALRM), like verl.

`VerifierPool` keeps up to `size` workers, started on demand; callers beyond that wait for a free one.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Callable, Optional

from .errors import RewardSetupError

HARD_GRACE_S = 2.0  # past budget_s + this, the worker is killed
STARTUP_TIMEOUT_S = 120.0  # importing sympy on a busy node can take a while; a worker that takes longer is broken
_MAX_TEXT = 2000  # characters of an error message or traceback sent back


class WorkerDied(RuntimeError):
    """The worker process exited while checking an answer."""


class _Worker:
    def __init__(self, argv: list[str], env: dict, startup_timeout_s: float):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, bufsize=0,
                                     close_fds=True)
        self._buffer = b""
        try:
            hello = self._read_line(time.monotonic() + startup_timeout_s)
        except WorkerDied as exc:
            self.kill()
            raise RewardSetupError(f"the verifier process `{' '.join(argv)}` failed while starting ({exc}); "
                                   "its stderr, above in this log, says why") from None
        if hello is None or "fatal" in hello:
            self.kill()
            raise RewardSetupError(hello["fatal"] if hello else
                                   f"the verifier process `{' '.join(argv)}` did not start within {startup_timeout_s:g} s")

    def ask(self, request: dict, deadline: float) -> Optional[dict]:
        """The worker's reply, or None when `deadline` (time.monotonic) passed first."""
        try:
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        except (BrokenPipeError, OSError) as exc:
            raise WorkerDied(self._exit_status()) from exc
        return self._read_line(deadline)

    def _read_line(self, deadline: float) -> Optional[dict]:
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise WorkerDied(self._exit_status())
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            raise WorkerDied(f"it wrote {line[:200]!r}, which is not the protocol") from None

    def _exit_status(self) -> str:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "it stopped answering"
        return f"killed by signal {-code}" if code < 0 else f"exit code {code}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            pipe.close()

    def close(self) -> None:
        """Ask the worker to exit (EOF on its stdin); kill it if it does not."""
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


class VerifierPool:
    """Up to `size` worker processes running `argv`; `check` is thread-safe and bounded by budget_s per answer."""

    def __init__(self, argv: list[str], size: int, budget_s: float, startup_timeout_s: float = STARTUP_TIMEOUT_S):
        if size < 1:
            raise ValueError(f"a verifier pool needs at least one process, got size={size}")
        self.argv, self.size, self.budget_s, self.startup_timeout_s = argv, size, budget_s, startup_timeout_s
        self.pid = os.getpid()  # a forked child must not talk to its parent's workers
        self._slots = threading.BoundedSemaphore(size)
        self._idle: queue.LifoQueue[_Worker] = queue.LifoQueue()
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        self.started = self.killed = 0
        # the package's own folder first, so a worker imports the same sspo_verl as its caller
        package_root = str(Path(__file__).resolve().parents[2])
        path = os.environ.get("PYTHONPATH")
        self.env = {**os.environ, "PYTHONPATH": package_root + (os.pathsep + path if path else "")}

    def check(self, request: dict) -> dict:
        """The worker's reply to `request` (plus budget_s): its check's dict, {"timeout": True} (soft or hard),
        or {"error": ..., "traceback": ...}. Raises RewardSetupError when no worker can start."""
        with self._slots:
            worker = self._take()
            try:
                reply = worker.ask({**request, "budget_s": self.budget_s},
                                   time.monotonic() + self.budget_s + HARD_GRACE_S)
            except WorkerDied as died:
                self._discard(worker)
                return {"error": f"the verifier process died while checking this answer ({died})", "traceback": ""}
            except BaseException:
                self._discard(worker)  # e.g. KeyboardInterrupt mid-read: the worker's state is unknown
                raise
            if reply is None:  # stuck past the hard bound (in C code): kill it, a new one starts on demand
                self._discard(worker)
                with self._lock:
                    self.killed += 1
                return {"timeout": True, "killed": True}
            self._idle.put(worker)
            return reply

    def _take(self) -> _Worker:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        worker = _Worker(self.argv, self.env, self.startup_timeout_s)  # raises RewardSetupError
        with self._lock:
            self._all.add(worker)
            self.started += 1
        return worker

    def _discard(self, worker: _Worker) -> None:
        with self._lock:
            self._all.discard(worker)
        worker.kill()

    def alive(self) -> int:
        with self._lock:
            return len(self._all)

    def close(self) -> None:
        """Stop every worker (idle ones; call when no check is running)."""
        with self._lock:
            workers, self._all = list(self._all), set()
        for worker in workers:
            worker.close()


_pools: dict[tuple, VerifierPool] = {}
_pools_lock = threading.Lock()


def shared_pool(argv: list[str], size: int, budget_s: float) -> VerifierPool:
    """One pool per (argv, size, budget) in this process, closed at exit; a forked child gets its own."""
    key = (tuple(argv), size, budget_s)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None or pool.pid != os.getpid():
            pool = _pools[key] = VerifierPool(argv, size, budget_s)
            atexit.register(pool.close)
        return pool


def close_pools() -> None:
    """Stop every shared pool's workers (tests; the process's exit does it too)."""
    with _pools_lock:
        pools = [p for p in _pools.values() if p.pid == os.getpid()]
        _pools.clear()
    for pool in pools:
        pool.close()


# ---------------------------------------------------------------------------------------------------
# Worker side
# ---------------------------------------------------------------------------------------------------


class _SoftTimeout(BaseException):
    """Raised by SIGALRM inside a check. A BaseException, so the verifier's own `except Exception` (math-verify
    has many) cannot swallow it."""


def _on_alarm(signum, frame):
    raise _SoftTimeout()


def serve(setup: Callable[[], Callable[[dict], dict]]) -> int:
    """The worker's main loop: `setup()` imports and self-tests the verifier and returns its check."""
    protocol = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # whatever the verifier prints goes to stderr, never into the protocol

    def send(message: dict) -> None:
        protocol.write(json.dumps(message).encode() + b"\n")

    try:
        check = setup()
        signal.signal(signal.SIGALRM, _on_alarm)
    except BaseException as exc:  # reported to the caller, which raises RewardSetupError with it
        send({"fatal": f"{type(exc).__name__}: {exc}"[:_MAX_TEXT]})
        return 1
    send({"ready": True})
    for line in sys.stdin.buffer:
        request = json.loads(line)
        try:
            signal.setitimer(signal.ITIMER_REAL, float(request["budget_s"]))
            try:
                reply = check(request)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _SoftTimeout:
            reply = {"timeout": True}
        except Exception as exc:  # sent back: the caller counts it, logs it once, and decides (errors.py)
            reply = {"error": f"{type(exc).__name__}: {exc}"[:_MAX_TEXT], "traceback": traceback.format_exc()[-_MAX_TEXT:]}
        send(reply)
    return 0
