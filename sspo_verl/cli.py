"""What every `python -m sspo_verl...` command shares: a user error is one line, never a traceback.

    parser = cli.ArgumentParser(prog="python -m sspo_verl.tools.compare", ...)
    args = parser.parse_args(argv)          # a bad flag: "<prog>: error: <message> (see --help)", exit 2
    return cli.run(parser.prog, work, args) # an SSPOError raised by `work`: the same one line, exit 2

Rules (docs/TESTING.md): arguments are checked before any work; the message names the flag the user typed and the
fix; a missing optional dependency is reported before work starts (errors.require_module).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from .errors import SSPOError

USER_ERROR = 2  # argparse's exit status for a usage error; the tools use it for every user error


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with errors on one line (argparse prints the whole usage block first)."""

    def error(self, message: str):  # noqa: D401 - argparse's signature
        self.exit(USER_ERROR, f"{self.prog}: error: {message} (see --help)\n")


def fail(prog: str, message: str) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return USER_ERROR


def run(prog: str, work: Callable[..., Any], *args, **kwargs) -> int:
    """work(*args, **kwargs) -> exit status; an SSPOError ends in its one line and exit status 2."""
    try:
        status = work(*args, **kwargs)
    except SSPOError as exc:
        return fail(prog, str(exc))
    return 0 if status is None else int(status)
