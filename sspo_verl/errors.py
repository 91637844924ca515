"""The package's own error type, and what every command-line tool does with it.

`SSPOError` is a user error: a bad argument, setting, environment value, input file or missing optional
dependency. Its message names the bad value (and the flag, key or variable the user typed) and the fix, in one
line. Every error class of the package that reports such a mistake derives from it (GateRequirementError,
SSPOInputError, CalibrationError, CompareError, ...), so callers can catch one type; it is a ValueError, as the
loss API's errors always were.

Light on purpose (no torch, no verl): the command-line tools import it before any work.
"""

from __future__ import annotations

import importlib.util


class SSPOError(ValueError):
    """A user error; the message names what is wrong and the fix (one line)."""


class MissingDependencyError(SSPOError, ModuleNotFoundError):
    """An optional package a command needs is not installed; raised before the command does any work."""


def require_module(module: str, extra: str, what: str) -> None:
    """Raise MissingDependencyError unless `module` can be imported (checked without importing it).

    extra: the sspo-verl extra that installs it (`pip install 'sspo-verl[<extra>]'`); what: what needs it."""
    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(
            f"{what} needs {module}, which is not installed: pip install 'sspo-verl[{extra}]' (or pip install {module})")
