import os

import pytest

# Ray reads this at import: bind 127.0.0.1 only, never the machine's external address (set before any import).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

# What `use_cpu_platform()` sets for its own process. verl's platform singleton, once created, keeps the CPU
# platform in this process; the variables must not outlive the module, or later tests' subprocesses and Ray
# workers (which never register platform "cpu") inherit VERL_PLATFORM=cpu and fail with "Unknown platform 'cpu'".
_PLATFORM_VARS = ("VERL_PLATFORM", "VERL_ENGINE_DEVICE")


@pytest.fixture(autouse=True, scope="module")
def _restore_platform_environment():
    """Autouse fixtures of a scope run before the others of that scope, so this wraps a module's own fixtures."""
    saved = {name: os.environ.get(name) for name in _PLATFORM_VARS}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
