"""What a run's own config says, for `sspo_verl.tools.compare`: its training data source and the settings that
tell it apart from another run.

verl's main_ppo is a `@hydra.main`: Hydra writes the composed config to `<hydra.run.dir>/.hydra/config.yaml`
(unresolved: interpolations stay as written) and its own settings, with the launch folder (`hydra.runtime.cwd`), to
`.hydra/hydra.yaml`. recipes/cpu_tiny.sh sets `hydra.run.dir` to the run folder, so the config sits beside the
run's logs: it is looked for in the log's folder and the folder above it (a TensorBoard folder inside the run).

The testbed writes config.json beside its metrics.jsonl.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..loss.methods import ACTOR, METHODS

HYDRA_CONFIG = Path(".hydra") / "config.yaml"
LOSS_MODE = f"{ACTOR}.policy_loss.loss_mode"


def _loss_keys(settings) -> set[str]:
    return {LOSS_MODE if key == "loss_mode" else f"{ACTOR}.{key}" for key in settings}


# What tells two verl runs apart besides their seed: the loss (the keys the methods table sets for that loss mode;
# every table key for a mode it does not list, e.g. a user's gate), the batch shape (M = train_batch_size /
# ppo_mini_batch_size), the schedule, the model and the data.
LOSS_KEYS = {mode: set.union(*(_loss_keys(s) for s in METHODS.values() if s["loss_mode"] == mode))
             for mode in {s["loss_mode"] for s in METHODS.values()}}
ALL_LOSS_KEYS = set.union(*LOSS_KEYS.values())
VERL_SETTINGS = [
    "algorithm.adv_estimator", "data.train_batch_size", f"{ACTOR}.ppo_mini_batch_size", f"{ACTOR}.ppo_epochs",
    "actor_rollout_ref.rollout.n", f"{ACTOR}.optim.lr", "trainer.total_training_steps", "actor_rollout_ref.model.path",
    "data.train_files"]
# ... and two testbed runs (config.json), beside what their records carry (method, knob, M, lr, seed)
TESTBED_SETTINGS = ["task", "rl.steps", "rl.prompts", "rl.group_size", "rl.warmup_steps", "model_size", "sft_steps",
                    "sft_batch", "flawed_fraction"]


@dataclass
class RunConfig:
    path: Path  # the config file
    settings: dict[str, str] = field(default_factory=dict)  # VERL_SETTINGS / TESTBED_SETTINGS -> value as text
    train_sources: list[str] | None = None  # verl: the data_source values of data.train_files; None: not known
    why_no_sources: str = ""  # when train_sources is None
    lr: float | None = None  # the testbed's rl.lr: the lr of its records that carry no lr_setting


def find_hydra_config(log: Path) -> Path | None:
    """`.hydra/config.yaml` in the log's folder (the log itself when it is a folder) or the folder above."""
    folder = log if log.is_dir() else log.parent
    for candidate in (folder / HYDRA_CONFIG, folder.parent / HYDRA_CONFIG):
        if candidate.is_file():
            return candidate
    return None


def _launch_folder(config_path: Path) -> Path | None:
    """hydra.runtime.cwd: where main_ppo was launched, which relative data paths are relative to."""
    from omegaconf import OmegaConf

    hydra_yaml = config_path.parent / "hydra.yaml"
    if not hydra_yaml.is_file():
        return None
    cwd = OmegaConf.select(OmegaConf.load(hydra_yaml), "hydra.runtime.cwd", throw_on_resolution_failure=False)
    return Path(cwd) if cwd else None


def _data_sources(parquet: Path) -> list[str] | None:
    """The data_source values of a verl RL parquet; None when it has no such column."""
    import pyarrow.parquet as pq

    if "data_source" not in pq.read_schema(parquet).names:
        return None
    return sorted(set(map(str, pq.read_table(parquet, columns=["data_source"]).column(0).to_pylist())))


def read_verl_config(config_path: Path) -> RunConfig:
    """The settings and training data sources of the run whose Hydra config is `config_path`."""
    from omegaconf import ListConfig, OmegaConf

    cfg = OmegaConf.load(config_path)

    def value(key: str):
        return OmegaConf.select(cfg, key, throw_on_resolution_failure=False)

    loss_keys = LOSS_KEYS.get(str(value(LOSS_MODE)), ALL_LOSS_KEYS)
    run = RunConfig(config_path, {key: str(value(key)) for key in sorted(loss_keys) + VERL_SETTINGS})
    files = value("data.train_files")
    files = list(files) if isinstance(files, (list, ListConfig)) else [files] if files else []
    launch = _launch_folder(config_path)
    paths = [Path(str(f)).expanduser() for f in files]
    paths = [p if p.is_absolute() or launch is None else launch / p for p in paths]
    missing = [str(p) for p in paths if not p.is_file()]
    if not paths:
        run.why_no_sources = f"{config_path} names no data.train_files"
    elif missing:
        run.why_no_sources = f"data.train_files in {config_path} names {', '.join(missing)}, not readable here"
    else:
        sources = [_data_sources(p) for p in paths]
        if any(s is None for s in sources):
            run.why_no_sources = f"data.train_files in {config_path} has no data_source column"
        else:
            run.train_sources = sorted({source for s in sources for source in s})
    return run


def read_testbed_config(records_path: Path) -> RunConfig | None:
    """The testbed's config.json beside its records, or None when there is none."""
    path = records_path.parent / "config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except ValueError:
        config = None
    if not isinstance(config, dict):
        return None  # not the testbed's config: nothing to compare by
    settings = {}
    for key in TESTBED_SETTINGS:
        node = config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        settings[key] = json.dumps(node, sort_keys=True)
    rl = config.get("rl") if isinstance(config.get("rl"), dict) else {}
    return RunConfig(path, settings, lr=rl.get("lr"))
