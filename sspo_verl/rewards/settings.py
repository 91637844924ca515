"""The rewards' knobs: environment variables of the reward workers, read and checked in one place.

    SSPO_REWARD_TIMEOUT_S            seconds to check one math answer (default 5); past it: score 0, timeout = 1
    SSPO_REWARD_PROCESSES            math-verify processes per reward worker (default min(4, CPUs))
    SSPO_REWARD_MAX_ERROR_FRACTION   fraction of the last 200 answers of a process that may fail unexpectedly
                                     before the run stops (default 0.05; 0: the first error stops it; 1: none does)
"""

from __future__ import annotations

import math
import os
from typing import Callable

TIMEOUT_ENV, PROCESSES_ENV, MAX_ERROR_FRACTION_ENV = (
    "SSPO_REWARD_TIMEOUT_S", "SSPO_REWARD_PROCESSES", "SSPO_REWARD_MAX_ERROR_FRACTION")
DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MAX_ERROR_FRACTION = 0.05


class SettingError(ValueError):
    """A knob set to a value it cannot take: a configuration error, raised at the first answer."""


def _read(name: str, default, cast: Callable, valid: Callable, requirement: str):
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = cast(raw)
    except ValueError:
        value = math.nan
    if not valid(value):
        raise SettingError(f"{name}={raw!r} must be {requirement} (default {default})")
    return value


def timeout_s() -> float:
    return _read(TIMEOUT_ENV, DEFAULT_TIMEOUT_S, float, lambda v: 0 < v < math.inf, "a positive number of seconds")


def processes() -> int:
    return _read(PROCESSES_ENV, min(4, os.cpu_count() or 1), int, lambda v: v >= 1, "a positive whole number")


def max_error_fraction() -> float:
    return _read(MAX_ERROR_FRACTION_ENV, DEFAULT_MAX_ERROR_FRACTION, float, lambda v: 0.0 <= v <= 1.0,
                 "a number in [0, 1]: the fraction of the last 200 answers that may fail before the run stops")
