"""The comparison tool reads the logs verl itself writes (verl's Tracking: file, tensorboard, console)."""

import importlib.util
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from sspo_verl.tools import compare

VAL = "val-core/openai/gsm8k/reward/mean@1"
TESTBED_METRICS = Path(__file__).resolve().parents[2] / "docs" / "results" / "main-cpu" / "metrics.jsonl"


def _metrics(step: int, method_offset: float) -> dict:
    """What verl's trainer logs: numpy scalars for the actor and validation metrics, as reduce_metrics gives."""
    m = {"critic/score/mean": 0.1 * step + method_offset, "actor/entropy": 1.0 / (step + 1),
         "actor/ppo_kl": np.float64(0.01 * step), "actor/grad_norm": np.float64(0.5), "actor/pg_clipfrac": np.float32(0.02),
         "actor/pg_loss": np.float64(-0.1), "response_length/mean": 100.0 + step,
         "actor/sspo/token_w_mean": np.float64(0.9), "timing_s/gen": 3.0}
    if step % 2 == 0:
        m[VAL] = np.float64(0.4 + 0.05 * step + method_offset)
    return m


def _write_verl_logs(tmp_path, monkeypatch, capsys, name: str, method_offset: float) -> dict:
    """One run logged by verl's Tracking to all three backends; returns {format: path}."""
    from verl.utils.tracking import Tracking

    paths = {"jsonl": tmp_path / f"{name}.jsonl", "tensorboard": tmp_path / f"tb_{name}", "console": tmp_path / f"{name}.log"}
    monkeypatch.setenv("VERL_FILE_LOGGER_PATH", str(paths["jsonl"]))
    monkeypatch.setenv("TENSORBOARD_DIR", str(paths["tensorboard"]))
    tracker = Tracking(project_name="sspo", experiment_name=name, default_backend=["console", "file", "tensorboard"])
    capsys.readouterr()
    for step in range(1, 7):
        tracker.log(data=_metrics(step, method_offset), step=step)
    paths["console"].write_text("(TaskRunner pid=4242) unrelated: line\n" + "\n".join(
        f"(TaskRunner pid=4242) {line}" for line in capsys.readouterr().out.splitlines()))
    tracker.finish()
    return paths


def _close(a: dict, b: dict, rel: float) -> bool:
    return a.keys() == b.keys() and all(a[k] == (b[k] if isinstance(b[k], str) else pytest.approx(b[k], rel=rel))
                                        for k in a)


@pytest.fixture
def logs(tmp_path, monkeypatch, capsys):
    return {name: _write_verl_logs(tmp_path, monkeypatch, capsys, name, off)
            for name, off in (("grpo_s0", 0.0), ("grpo_s1", 0.02), ("sspo_s0", 0.05))}


def test_every_verl_log_format_gives_the_same_records(logs):
    runs = {fmt: compare.to_records("sspo", 0, compare.read_log(path), VAL) for fmt, path in logs["sspo_s0"].items()}
    assert len(runs["jsonl"]) == len(runs["console"]) == len(runs["tensorboard"]) == 6
    for a, b, c in zip(runs["jsonl"], runs["console"], runs["tensorboard"]):
        assert _close(a, b, rel=1e-7)  # the console prints float32 values at their own precision
        assert _close(a, c, rel=1e-6)  # tensorboard stores float32
    assert _close(runs["jsonl"][1], {"method": "sspo", "seed": 0, "step": 2, "reward": 0.25, "entropy": 1 / 3,
                                   "ppo_kl": 0.02, "grad_norm": 0.5, "pg_clipfrac": 0.02, "pg_loss": -0.1,
                                   "response_len": 102.0, "val_acc": 0.55, "sspo/token_w_mean": 0.9}, rel=1e-7)
    assert "val_acc" not in runs["jsonl"][0]  # step 1 had no validation


def test_console_reads_numpy_scalars_and_a_nan_loss_is_kept(tmp_path):
    from verl.utils.logger.aggregate_logger import concat_dict_to_str

    line = concat_dict_to_str({"actor/pg_loss": np.float64("nan"), VAL: np.float64(0.5), "actor/ppo_kl": np.float32(1e-5),
                               "critic/score/mean": 0.25}, step=3)
    path = tmp_path / "main_ppo.log"
    path.write_text(line + "\n")
    (record,) = compare.to_records("sspo", 0, compare.read_log(path), VAL)
    assert record["val_acc"] == 0.5 and record["reward"] == 0.25 and record["ppo_kl"] == pytest.approx(1e-5)
    assert math.isnan(record["pg_loss"])  # kept, so the summary counts the run as collapsed
    (null,) = compare.to_records("sspo", 0, {3: {"actor/pg_loss": None}}, VAL)  # orjson's NaN
    assert math.isnan(null["pg_loss"])


def test_wandb_csv_export(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text(f"_step,critic/score/mean,{VAL}\n1,0.25,\n2,0.5,0.7\n")
    records = compare.to_records("grpo", 0, compare.read_log(path), VAL)
    assert records == [{"method": "grpo", "seed": 0, "step": 1, "reward": 0.25},
                       {"method": "grpo", "seed": 0, "step": 2, "reward": 0.5, "val_acc": 0.7}]


def test_cli_aligns_runs_and_writes_the_report(logs, tmp_path, capsys):
    out = tmp_path / "report"
    compare.main(["--run", f"grpo={logs['grpo_s0']['jsonl']}", "--run", f"grpo={logs['grpo_s1']['tensorboard']}",
                  "--run", f"sspo={logs['sspo_s0']['console']}", "--out", str(out)])
    printed = capsys.readouterr().out
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert {(r["method"], r["seed"]) for r in records} == {("grpo", 0), ("grpo", 1), ("sspo", 0)}
    # final held-out (step 6): grpo 0.70 and 0.72 -> 0.710 +- 0.010; sspo 0.75, which grpo's mean reaches at step 6
    assert "| grpo | 2 | 0.710 ± 0.010 | 6.0 (1/2) | 0/2 |" in printed
    assert "| sspo | 1 | 0.750 ± 0.000 | 6.0 (1/1) | 0/1 |" in printed
    for name in ("summary.md", "reward_accuracy.png", "importance_weights.png", "entropy.png"):
        assert (out / name).exists()


def test_the_testbeds_own_metrics_jsonl_is_read(tmp_path, capsys):
    """It used to end in KeyError: 'data'. A bare path takes every method and seed; METHOD=PATH one method."""
    assert compare.main(["--run", str(TESTBED_METRICS), "--baseline", "grpo_dapo", "--out", str(tmp_path / "all")]) == 0
    printed = capsys.readouterr().out
    # the committed run folder's own summary table (docs/results/main-cpu/summary.md), regenerated
    assert "| grpo_dapo | 3 | 0.686 ± 0.040 | 5.0 (2/3) | 0/3 |" in printed
    assert "| sspo | 3 | 0.628 ± 0.054 | 5.0 (2/3) | 0/3 |" in printed
    assert compare.main(["--run", f"sspo={TESTBED_METRICS}", "--run", f"grpo={TESTBED_METRICS}",
                         "--out", str(tmp_path / "two")]) == 0
    records = [json.loads(line) for line in (tmp_path / "two" / "records.jsonl").read_text().splitlines()]
    assert {(r["method"], r["seed"]) for r in records} == {(m, s) for m in ("sspo", "grpo") for s in range(3)}


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


BAD_INPUTS = [  # (arguments given a tmp folder, what the one line must say)
    (lambda d: ["--run", f"grpo={d / 'missing.jsonl'}"], r"no log at .*missing.jsonl: pass the file or folder"),
    (lambda d: ["--run", "grpo=" + _write(d, "garbage.jsonl", "{not json")], r"garbage.jsonl, line 1, is not JSON"),
    (lambda d: ["--run", "grpo=" + _write(d, "other.jsonl", json.dumps({"loss": 1}))],
     r"line 1, is neither verl's file logger format .* nor the testbed's records .*found keys \['loss'\]"),
    (lambda d: ["--run", "grpo=" + _write(d, "export.csv", "loss,acc\n1,2\n")],
     r"needs a `_step` or `step` column; found \['loss', 'acc'\]: export the run's history with its step"),
    (lambda d: ["--run", "grpo=" + _write(d, "empty.log", "nothing here")], r"empty.log: no metrics found; pass one of"),
    (lambda d: ["--run", "just_a_path.jsonl"], r"expected METHOD=PATH"),
    (lambda d: ["--run", f"sapo_x={TESTBED_METRICS}"], r"has no records of 'sapo_x'; it has grpo, grpo_dapo, sspo"),
    (lambda d: ["--run", str(TESTBED_METRICS), "--baseline", "gmpo"], r"--baseline 'gmpo' is none of the runs' methods"),
    (lambda d: ["--run", str(TESTBED_METRICS), "--out", _write(d, "a_file", "")],
     r"--out .*a_file is a file; pass a folder for summary.md, the plots and records.jsonl"),
]


@pytest.mark.parametrize("index", range(len(BAD_INPUTS)))
def test_bad_input_is_one_line_with_the_fix(tmp_path, capsys, index):
    arguments, message = BAD_INPUTS[index]
    argv = arguments(tmp_path)
    code = compare.main(argv if "--out" in argv else argv + ["--out", str(tmp_path / "report")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("python -m sspo_verl.tools.compare: error: ") and re.search(message, err), err


def test_without_matplotlib_compare_says_what_to_install(tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    assert compare.main(["--run", str(TESTBED_METRICS), "--out", str(tmp_path)]) == 2
    assert "pip install 'sspo-verl[compare]'" in capsys.readouterr().err


def test_the_readmes_install_line_gives_a_working_compare():
    """The README's `pip install '.[...]'` line must pull matplotlib in (it was only in the test extras)."""
    from importlib.metadata import requires

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    (extras,) = re.findall(r"^pip install '\.\[([\w,]+)\]'", readme, re.M)
    needed = {r.split(";")[0] for r in requires("sspo-verl")
              if any(f'extra == "{extra}"' in r for extra in extras.split(","))}
    assert any(r.startswith("matplotlib") for r in needed), (extras, needed)
