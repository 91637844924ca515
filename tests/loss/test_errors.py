"""The loss API's user errors are the package's own type (sspo_verl.errors.SSPOError) and name what is wrong and the
fix: a bad gate function, a bad environment value, a bad call; the public names follow what is registered."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY

import sspo_verl
from sspo_verl.errors import SSPOError
from sspo_verl.loss import plugin
from sspo_verl.loss.gates import GATES, GateError, GateRequirementError, UnknownGateError
from sspo_verl.loss.knobs import ConfigError, MisplacedKeyError
from sspo_verl.loss.objective import SSPOInputError
from sspo_verl.tools.calibrate import CalibrationError

from ..helpers import actor_config, random_batch

ATAN = (lambda x, t: torch.atan(t * x) / t, lambda x, t: 1 / (1 + (t * x) ** 2), lambda t: math.pi / (2 * t))


def test_every_error_class_is_an_sspo_error():
    for cls in (GateError, UnknownGateError, GateRequirementError, ConfigError, MisplacedKeyError, SSPOInputError,
                CalibrationError):
        assert issubclass(cls, SSPOError) and issubclass(cls, ValueError), cls
    assert issubclass(MisplacedKeyError, TypeError)  # what a dataclass raises for a key it does not have


def _float32_overflow(x, t):
    return torch.atan(t * x) / t + 0 * x**4  # x^4 overflows float32 at |x| > 1.8e9 (the loss's dtype), not float64


BAD_GATES = {  # what is wrong with the gate function: (log_g, weight, bound), the message
    "log_g raises": ((lambda x, t: torch.atan(float(t) * x), ATAN[1], ATAN[2]),
                     r"log_g\(x, tau\) raised .*It must take a tensor tau shaped like x"),
    "weight raises": ((ATAN[0], lambda x, t: 1 / (1 + (t.item() * x) ** 2), ATAN[2]),
                      r"weight\(x, tau\) raised RuntimeError.*use torch ops only"),
    "weight not elementwise": ((ATAN[0], lambda x, t: (1 / (1 + (t * x) ** 2)).mean(), ATAN[2]),
                               r"weight\(x, tau\) must return a tensor shaped and typed like x \(torch.float64, "
                               r"\(\d+,\)\), got a torch.float64 tensor of shape \(\)"),
    "log_g returns a float": ((lambda x, t: 0.5, ATAN[1], ATAN[2]), r"log_g\(x, tau\) must return a tensor .* got 0.5"),
    "log_g drops dtype": ((lambda x, t: ATAN[0](x, t).float(), ATAN[1], ATAN[2]), r"got a torch.float32 tensor"),
    "log_g detached": ((lambda x, t: ATAN[0](x.detach(), t), ATAN[1], ATAN[2]), r"log_g\(x, tau\) is not differentiable"),
    "NaN": ((lambda x, t: torch.where(x.abs() > 5, torch.nan, ATAN[0](x, t)), ATAN[1], ATAN[2]),
            r"\(i\) g > 0 fails: log g is not finite \(first at x = log r = -"),
    "bound raises": ((ATAN[0], ATAN[1], lambda t: t.item()), r"bound\(tau\) must return a number for a float tau"),
    "bound is not a function": ((ATAN[0], ATAN[1], 1.0), r"bound must be a function, got 1.0"),
    "float32 overflow": ((_float32_overflow, ATAN[1], ATAN[2]),
                         r"in float32: log_g is not finite at x = log r = .*compute it without intermediates"),
}


@pytest.mark.parametrize("case", list(BAD_GATES))
def test_a_bad_gate_function_is_an_sspo_error_naming_what_is_wrong_and_the_fix(case):
    functions, message = BAD_GATES[case]
    with pytest.raises(GateRequirementError, match=message) as error:
        sspo_verl.register_gate("bad_fn", *functions)
    assert "The gate is not registered; the requirements are in docs/GATES.md (Custom gates)." in str(error.value)
    assert "bad_fn" not in GATES and "sspo_bad_fn" not in POLICY_LOSS_REGISTRY


def test_bad_names_and_unknown_gates_are_gate_errors():
    with pytest.raises(GateError, match="lowercase letters"):
        sspo_verl.register_gate("Bad-Name", *ATAN)
    with pytest.raises(UnknownGateError, match=r"Unknown SSPO gate 'cosine'. Known gates: \[.*'sapo'\]"):
        sspo_verl.get_gate("cosine")
    with pytest.raises(UnknownGateError, match="names gate 'cosine', which is not registered"):
        plugin.check_actor_config(actor_config("sspo_cosine"))


def test_the_public_names_follow_what_is_registered():
    before = sspo_verl.LOSS_MODES
    assert "sspo_sapo" in before and "sspo_live" not in before
    try:
        sspo_verl.register_gate("live", *ATAN)
        assert "sspo_live" in sspo_verl.LOSS_MODES and "sspo_live" in plugin.LOSS_MODES and "live" in sspo_verl.GATES
    finally:
        GATES.pop("live", None)
        POLICY_LOSS_REGISTRY.pop("sspo_live", None)
    assert sspo_verl.LOSS_MODES == before


def test_loss_call_errors_are_sspo_errors():
    batch = random_batch(B=2, T=3)
    fn = POLICY_LOSS_REGISTRY["sspo_sapo"]
    with pytest.raises(ConfigError, match="needs the actor config"):
        fn(old_log_prob=batch.old_log_prob, log_prob=batch.log_prob, advantages=batch.advantages, response_mask=batch.mask)
    with pytest.raises(SSPOInputError, match="advantages has 1 non-finite value"):
        adv = batch.advantages.clone()
        adv[0, 0] = float("nan")
        fn(old_log_prob=batch.old_log_prob, log_prob=batch.log_prob, advantages=adv, response_mask=batch.mask,
           config=actor_config("sspo_sapo"))


PROBE = r"""
import json, logging
logging.basicConfig(level=logging.ERROR, format="LOG %(name)s %(message)s")
try:
    import sspo_verl.loss.plugin as plugin
    print(json.dumps({"implementation": plugin.IMPLEMENTATION}))
except Exception as exc:
    from sspo_verl.errors import SSPOError
    print(json.dumps({"error": type(exc).__name__, "sspo_error": isinstance(exc, SSPOError), "message": str(exc)}))
"""


def _probe(**env) -> tuple[dict, str]:
    clean = {k: v for k, v in os.environ.items() if k != "SSPO_VERL_IMPL"}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120,
                         env={**clean, "VERL_USE_EXTERNAL_PLUGINS": "none", **env})  # the plugin loads here, not at `import verl`
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


@pytest.mark.parametrize("value,expected", [("", "fused"), ("reference", "reference")])  # unset: every other test
def test_implementation_switch_accepts_its_values(value, expected):
    result, _ = _probe(SSPO_VERL_IMPL=value)
    assert result == {"implementation": expected}


def test_a_bad_implementation_switch_is_an_sspo_error_naming_the_variable_and_the_fix():
    result, stderr = _probe(SSPO_VERL_IMPL="Fused")
    assert result["error"] == "ConfigError" and result["sspo_error"] is True
    assert result["message"].startswith("SSPO_VERL_IMPL='Fused' is not an implementation of the SSPO loss: set "
                                        "SSPO_VERL_IMPL=fused (the default) or SSPO_VERL_IMPL=reference")
    assert "LOG sspo_verl.loss.plugin sspo_verl failed to register its loss modes" in stderr  # loud, at ERROR
