"""The verifier pool's time bound and failure handling, with stand-in workers that misbehave on purpose."""

import os
import sys
import threading

import pytest

from sspo_verl.rewards import verifier_pool
from sspo_verl.rewards.errors import RewardSetupError
from sspo_verl.rewards.verifier_pool import VerifierPool

# A worker whose check does what the request says: answer, sleep (interruptible), hang with SIGALRM blocked
# (like C code the soft timer cannot interrupt), raise, or exit.
WORKER = r"""
import os, signal, sys, time
from sspo_verl.rewards.verifier_pool import serve

def setup():
    if os.environ.get("FAKE_FATAL"):
        raise RuntimeError("cannot start: " + os.environ["FAKE_FATAL"])
    def check(request):
        op = request["op"]
        if op == "sleep":
            time.sleep(request["s"])
        elif op == "hang":
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            time.sleep(60)
        elif op == "raise":
            raise KeyError("deep inside the verifier")
        elif op == "exit":
            os._exit(3)
        return {"pid": os.getpid()}
    return check

sys.exit(serve(setup))
"""


def _pool(size=1, budget_s=0.3, **kw):
    return VerifierPool([sys.executable, "-c", WORKER], size, budget_s, **kw)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_soft_timeout_keeps_the_worker():
    pool = _pool()
    try:
        pid = pool.check({"op": "ok"})["pid"]
        assert pool.check({"op": "sleep", "s": 30}) == {"timeout": True}
        assert pool.check({"op": "ok"})["pid"] == pid and pool.started == 1
    finally:
        pool.close()


def test_a_worker_stuck_past_the_hard_bound_is_killed_and_replaced(monkeypatch):
    monkeypatch.setattr(verifier_pool, "HARD_GRACE_S", 0.5)
    pool = _pool()
    try:
        pid = pool.check({"op": "ok"})["pid"]
        assert pool.check({"op": "hang"}) == {"timeout": True, "killed": True}  # not its reply after the 60 s
        assert pool.killed == 1 and _gone(pid)
        assert pool.check({"op": "ok"})["pid"] != pid and pool.alive() == 1
    finally:
        pool.close()


def test_errors_and_deaths_are_reported_not_hidden():
    pool = _pool()
    try:
        reply = pool.check({"op": "raise"})
        assert reply["error"] == "KeyError: 'deep inside the verifier'" and "in check" in reply["traceback"]
        died = pool.check({"op": "exit"})
        assert died["error"].startswith("the verifier process died while checking this answer (exit code 3)")
        assert "pid" in pool.check({"op": "ok"})  # a new worker took its place
    finally:
        pool.close()


def test_a_worker_that_cannot_start_is_a_setup_error(monkeypatch):
    monkeypatch.setenv("FAKE_FATAL", "no verifier here")
    pool = _pool()
    with pytest.raises(RewardSetupError, match="RuntimeError: cannot start: no verifier here"):
        pool.check({"op": "ok"})
    assert pool.alive() == 0


def test_concurrent_callers_share_at_most_size_workers():
    pool = _pool(size=2, budget_s=5.0)
    pids, lock = [], threading.Lock()

    def call():
        reply = pool.check({"op": "sleep", "s": 0.05})
        with lock:
            pids.append(reply["pid"])

    try:
        threads = [threading.Thread(target=call) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(pids) == 8 and len(set(pids)) <= 2 and pool.started <= 2
    finally:
        pool.close()
    assert all(_gone(pid) for pid in set(pids))  # close() leaves nothing running
