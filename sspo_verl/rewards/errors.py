"""When a reward that could not be computed stops the run (the policy, documented in rewards/__init__).

Two kinds of failure are not about the answer:

- the scorer's machinery is broken (a missing package, a verifier process that cannot start or fails its
  self-test): every answer would score 0, so `RewardSetupError` is raised at once, whatever the rate;
- an unexpected error on one answer (a reference the verifier cannot parse, an exception inside it, a verifier
  process that died on it): the answer scores 0 with scorer_error = 1, the first occurrence of each cause is
  logged with its traceback, and `ErrorBudget` raises `RewardErrorRateExceeded` once more than a fraction of the
  recent answers failed (so a verifier that dies on every answer stops the run within a few answers too).
"""

from __future__ import annotations

import collections
import logging
import math
import threading

from ..errors import SSPOError
from .settings import MAX_ERROR_FRACTION_ENV, max_error_fraction

logger = logging.getLogger("sspo_verl.rewards")

ERROR_WINDOW = 200  # answers (per process) the error rate is measured over


class UnknownDataSource(SSPOError):
    """A row's data_source that neither sspo_verl.rewards nor verl's default_compute_score scores: every answer
    of it would be unscorable, so the run stops at the first one."""


class RewardSetupError(RuntimeError):
    """The scorer's machinery is broken: no answer can be scored, so the run must stop."""


class RewardErrorRateExceeded(RuntimeError):
    """Too many answers in a row of this process could not be scored."""


class ErrorBudget:
    """Unexpected scorer errors among the last `window` answers of this process (thread-safe)."""

    def __init__(self, window: int = ERROR_WINDOW, max_fraction: float | None = None):
        self.window = window
        self.max_fraction = max_error_fraction() if max_fraction is None else max_fraction
        self.max_errors = math.floor(self.max_fraction * window)  # more than this many in the window: stop
        self._recent: collections.deque[bool] = collections.deque(maxlen=window)
        self._lock = threading.Lock()
        self._logged: set[tuple] = set()
        self.answers = self.errors = self.timeouts = self.unreadable = 0

    def ok(self, data_source: str = "", unreadable: str | None = None) -> None:
        """A scored answer; `unreadable`: why the verifier could not read it (a malformed answer, scored 0)."""
        with self._lock:
            self.answers += 1
            self._recent.append(False)
            key = ("unreadable", data_source, unreadable.split(":", 1)[0] if unreadable else None)
            first = unreadable is not None and key not in self._logged
            self._logged.add(key)
            self.unreadable += unreadable is not None
        if first:
            logger.warning("sspo_verl.rewards: the verifier could not read a %s answer, which scores 0 as malformed "
                           "(logged once per error type; not a scorer error): %s", data_source, unreadable)

    def timeout(self, data_source: str, detail: str) -> None:
        """An answer whose check ran past its time bound: about the answer, so counted but never fatal."""
        with self._lock:
            self.answers += 1
            self.timeouts += 1
            self._recent.append(False)
            first = ("timeout", data_source) not in self._logged
            self._logged.add(("timeout", data_source))
        if first:
            logger.warning("sspo_verl.rewards: checking a %s answer ran past its time bound; it scores 0 with "
                           "timeout=1 (logged once per data source; %s)", data_source, detail)

    def error(self, data_source: str, cause: str, detail: str = "") -> None:
        """Count one unexpected error; log its cause the first time; raise when the recent rate is too high."""
        with self._lock:
            self.answers += 1
            self.errors += 1
            self._recent.append(True)
            recent = sum(self._recent)
            key = (data_source, cause.split("\n", 1)[0][:200])
            first = key not in self._logged
            self._logged.add(key)
        if first:
            logger.warning("sspo_verl.rewards: a %s answer could not be scored: %s. It scores 0 with scorer_error=1 "
                           "(this cause is logged once; the run stops when more than %d of the last %d answers of "
                           "this process fail, %s=%g).%s", data_source, cause, self.max_errors, self.window,
                           MAX_ERROR_FRACTION_ENV, self.max_fraction, f"\n{detail}" if detail else "")
        if recent > self.max_errors:
            raise RewardErrorRateExceeded(
                f"sspo_verl.rewards: {recent} of the last {len(self._recent)} answers scored by this process could "
                f"not be scored (more than {self.max_errors} of {self.window}, {MAX_ERROR_FRACTION_ENV}="
                f"{self.max_fraction:g}); the latest, from {data_source}: {cause}. Training on these rewards would "
                f"train on zeros: fix the cause (the first occurrence of each is logged with its traceback), or "
                f"raise {MAX_ERROR_FRACTION_ENV} to tolerate it.")
