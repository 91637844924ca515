import pytest

import sspo_verl.rewards as rewards
from sspo_verl.rewards.errors import ErrorBudget
from sspo_verl.rewards.verifier_pool import close_pools


@pytest.fixture(autouse=True)
def fresh_error_budget(monkeypatch):
    """Each test counts its own unexpected errors (the budget is per process)."""
    monkeypatch.setattr(rewards, "ERRORS", ErrorBudget(max_fraction=0.05))
    return rewards.ERRORS


@pytest.fixture(autouse=True, scope="package")
def no_verifier_left_running():
    yield
    close_pools()
