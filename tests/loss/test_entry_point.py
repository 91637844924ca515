"""The installed `verl.plugins` entry point registers the loss modes in fresh processes and Ray workers,
with no import of sspo_verl by the caller."""

import json
import os
import subprocess
import sys

import pytest

from ..helpers import SSPO_MODES

# A fresh interpreter that imports verl only, then uses the loss the way a verl worker would.
PROBE = r"""
import json, sys, torch
import verl
from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY, get_policy_loss_fn
from verl.workers.config import FSDPActorConfig, PolicyLossConfig
print(json.dumps({
    "imported_by_verl": "sspo_verl" in sys.modules,
    "modes": sorted(m for m in POLICY_LOSS_REGISTRY if m.startswith("sspo")),
}))
"""


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env}, cwd="/")  # cwd=/: the package comes from site-packages


def test_entry_point_registers_in_a_fresh_process():
    out = _run(PROBE)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["imported_by_verl"] is True
    assert set(SSPO_MODES) | {"sspo_sapo"} <= set(result["modes"])


def test_without_plugin_discovery_the_modes_are_absent_and_external_lib_is_the_backstop():
    # VERL_USE_EXTERNAL_PLUGINS=none switches entry points off: no sspo modes...
    out = _run(PROBE, VERL_USE_EXTERNAL_PLUGINS="none")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["modes"] == []
    # ...and actor_rollout_ref.model.external_lib=sspo_verl (verl imports it in HFModelConfig) brings them back.
    code = "from verl.utils.import_utils import import_external_libs; import_external_libs('sspo_verl')\n" + PROBE
    out = _run(code, VERL_USE_EXTERNAL_PLUGINS="none")
    assert out.returncode == 0, out.stderr
    assert set(SSPO_MODES) <= set(json.loads(out.stdout.strip().splitlines()[-1])["modes"])


def test_external_lib_names_the_missing_package():
    code = "from verl.utils.import_utils import import_external_libs; import_external_libs('sspo_verl_typo')"
    out = _run(code)
    assert out.returncode != 0 and "No module named 'sspo_verl_typo'" in out.stderr


@pytest.mark.slow
def test_entry_point_registers_inside_a_ray_worker():
    code = r"""
import os, json
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"   # before `import ray`: Ray binds loopback only
import ray, shutil, tempfile
temp_dir = tempfile.mkdtemp(prefix="sspo-ray-")  # Ray's own files, removed below
ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, _temp_dir=temp_dir)

@ray.remote
def worker():
    import sys, torch
    import verl  # the worker imports verl only; the entry point must do the rest
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY, get_policy_loss_fn
    from verl.workers.config import FSDPActorConfig, PolicyLossConfig
    cfg = FSDPActorConfig(strategy="fsdp2", rollout_n=1, ppo_mini_batch_size=2, ppo_micro_batch_size_per_gpu=1,
                          use_torch_compile=False, policy_loss=PolicyLossConfig(loss_mode="sspo"),
                          loss_agg_mode="seq-mean-token-mean")
    lp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    loss, metrics = get_policy_loss_fn("sspo")(old_log_prob=torch.tensor([[-1.5, -1.0]]), log_prob=lp,
        advantages=torch.tensor([[2.0, 2.0]]), response_mask=torch.tensor([[True, True]]),
        loss_agg_mode="seq-mean-token-mean", config=cfg, rollout_is_weights=None)
    return {"pid": os.getpid(), "modes": sorted(m for m in POLICY_LOSS_REGISTRY if m.startswith("sspo")),
            "loss": loss.item(), "s": metrics["actor/sspo/seq_s_mean"]}

try:
    result = ray.get(worker.remote())
finally:
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)
print(json.dumps({**result, "driver_pid": os.getpid(), "driver_has_plugin": "sspo_verl" in __import__("sys").modules}))
"""
    out = _run(code)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["pid"] != result["driver_pid"] and result["driver_has_plugin"] is False
    assert set(SSPO_MODES) <= set(result["modes"])
    # x = (0.5, -1.0), A = 2, tau_pos = 1: s = exp((atan(0.5) - atan(1)) / 2), loss = -2 s
    import math

    s = math.exp((math.atan(0.5) - math.atan(1.0)) / 2)
    assert result["s"] == pytest.approx(s, rel=1e-6) and result["loss"] == pytest.approx(-2 * s, rel=1e-6)


def test_rewards_and_data_preparation_import_neither_torch_nor_verl():
    """Reward workers and data preparation need neither (importing them used to cost ~5 s of torch and verl);
    the loss modes still register when verl is imported afterwards."""
    out = _run("import sys, json, sspo_verl.rewards, sspo_verl.data.prepare\n"
               "print(json.dumps(sorted(m for m in ('torch', 'verl') if m in sys.modules)))\n" + PROBE)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert json.loads(lines[-2]) == []
    assert set(SSPO_MODES) <= set(json.loads(lines[-1])["modes"])


def test_the_entry_point_names_the_registering_module():
    from importlib.metadata import entry_points

    (ep,) = entry_points(group="verl.plugins", name="sspo")  # the preflight checks this name
    assert ep.value == "sspo_verl.loss.plugin"


# A fresh interpreter where `missing` cannot be imported, as on a machine without it installed.
BLOCK = r"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == {missing!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Block())
"""


@pytest.mark.parametrize("missing", ["verl", "torch"])
def test_without_verl_or_torch_the_error_says_what_to_install(missing):
    code = BLOCK.format(missing=missing) + (
        "import sspo_verl, sspo_verl.rewards\n"  # the package and its rewards import without them
        "try:\n    sspo_verl.register_gate\nexcept ModuleNotFoundError as exc:\n    print(exc)\n")
    out = _run(code)
    assert out.returncode == 0, out.stderr
    message = out.stdout.strip()
    assert f"sspo_verl's loss modes need {missing}, which is not installed" in message
    assert "pip install 'verl>=0.9.1,<0.10'" in message and "torch==2.13.0" in message
