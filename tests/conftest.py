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


@pytest.fixture(autouse=True, scope="session")
def _private_home(tmp_path_factory):
    """Every test and every process it starts gets a home of its own: a local Ray (ray.init, main_ppo) writes its
    auth token to ~/.ray/auth_token, readable by everyone (0644), and the recipes' token setup writes there too;
    neither may land in the home of whoever runs the tests."""
    real = os.environ.get("HOME")
    os.environ["HOME"] = str(tmp_path_factory.mktemp("home"))
    yield
    if real is None:
        os.environ.pop("HOME", None)
    else:
        os.environ["HOME"] = real
