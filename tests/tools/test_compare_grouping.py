"""The testbed's records are grouped by everything that tells runs apart (method, knob, M, lr, seed, and the
experiment when files differ), against the committed run folders: the sweep's 435 runs are not 3 runs per method."""

import gzip
import json
import re
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from .compare_cli import run_compare  # noqa: F401 (the fixture)

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"
SWEEP = RESULTS / "sweep-cpu" / "metrics.jsonl.gz"
MAIN = RESULTS / "main-cpu"
PROG = "python -m sspo_verl.tools.compare: error: "


def _row(table: str, label: str) -> list[str]:
    (line,) = [line for line in table.splitlines() if line.startswith(f"| {label} |")]
    return [cell.strip() for cell in line.strip("|").split("|")]


def _sweep_finals() -> dict[tuple, list[float]]:
    """(method, knob, M) -> the final val_acc of each seed, read straight from the sweep's file."""
    last: dict[tuple, tuple[int, float]] = {}
    with gzip.open(SWEEP, "rt") as f:
        for r in map(json.loads, f):
            key = (r["method"], r["knob"], r["mini_batches"], r["seed"])
            if "val_acc" in r and r["step"] >= last.get(key, (-1, 0))[0]:
                last[key] = (r["step"], r["val_acc"])
    finals = defaultdict(list)
    for (method, knob, m, _), (_, acc) in sorted(last.items()):
        finals[(method, knob, m)].append(acc)
    return finals


def test_the_sweeps_runs_are_one_row_per_method_knob_and_m(tmp_path, run_compare):
    """It used to report 3 runs of sspo, pooling every knob and M of the sweep into 'seeds'."""
    finals = _sweep_finals()
    r = run_compare("--run", str(SWEEP), "--baseline", "grpo_dapo [clip 0.2/0.28 (default), M=16]")
    assert r.code == 0, r.err
    rows = [line for line in r.out.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    assert len(rows) == len(finals) == 145  # 29 method-knob settings x 5 values of M
    records = map(json.loads, (r.folder / "records.jsonl").read_text().splitlines())
    assert {rec["method"] for rec in records} == {row.split(" | ")[0][2:] for row in rows}
    assert not list(r.folder.glob("*.png"))  # 145 bands per panel: no plots, and the summary says why
    assert "No plots: 145 rows, more than 20 bands per panel" in r.summary()
    for (method, knob, m), accs in finals.items():
        assert len(accs) == 3  # three seeds each: nothing else pooled
        label = f"{method} [{knob}, M={m}]"
        seeds, acc = _row(r.out, label)[1:3]
        assert (seeds, acc) == ("3", f"{np.mean(accs):.3f} ± {np.std(accs):.3f}"), label


def test_where_keeps_one_m_and_labels_show_only_what_varies(run_compare):
    r = run_compare("--run", str(SWEEP), "--where", "M=16", "--where", "lr=3e-5",
                    "--baseline", "grpo_dapo [clip 0.2/0.28 (default)]")
    assert r.code == 0, r.err
    assert len([line for line in r.out.splitlines() if line.startswith("| ") and "---" not in line]) == 1 + 29
    assert _row(r.out, "sspo [tau 8.1/8.96]")[:3] == ["sspo [tau 8.1/8.96]", "3", "0.628 ± 0.054"]
    assert r.out.splitlines()[2].startswith("| grpo_dapo [clip 0.2/0.28 (default)] | 3 |")  # the baseline first


def test_the_default_baseline_is_grpo_dapo_and_an_ambiguous_one_is_an_error(run_compare):
    r = run_compare("--run", str(MAIN))  # a run folder; grpo is the file's first method
    assert r.code == 0, r.err
    assert r.out.splitlines()[2] == "| grpo_dapo | 3 | 0.686 ± 0.040 | 5.0 (2/3) | 0/3 | 0.414 | 0.00401 | 0.49 |"
    r = run_compare("--run", str(SWEEP), "--where", "M=16")
    assert r.code == 2 and len(r.err.splitlines()) == 1, r.err
    assert r.err.startswith(PROG + "the default baseline, 'grpo_dapo' (the testbed's), matches 3 groups: grpo_dapo "
                            "[clip 0.1/0.14]; grpo_dapo [clip 0.2/0.28 (default)]; grpo_dapo [clip 0.4/0.56]: pass "
                            "--baseline with one of them"), r.err


def test_testbed_folders_of_different_experiments_are_told_apart_by_folder(run_compare):
    """The what-learns runs are all grpo_dapo with no knob at M = 1, but each folder is another task or lr."""
    a, f = RESULTS / "what-learns" / "a-old-task-old-lr", RESULTS / "what-learns" / "f-new-default"
    r = run_compare("--run", str(a), "--run", str(f), "--baseline", "grpo_dapo [lr=0.0001, a-old-task-old-lr]")
    assert r.code == 0, r.err
    for folder in (a, f):
        accs = []
        for seed in (0, 1):
            rows = [rec for rec in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines())
                    if rec["seed"] == seed and "val_acc" in rec]
            accs.append(max(rows, key=lambda rec: rec["step"])["val_acc"])
        label = f"grpo_dapo [lr={json.loads((folder / 'config.json').read_text())['rl']['lr']:g}, {folder.name}]"
        assert _row(r.out, label)[1:3] == ["2", f"{np.mean(accs):.3f} ± {np.std(accs):.3f}"]


def test_files_of_one_experiment_pool_their_seeds(tmp_path, run_compare):
    """Two folders with the same config (a run split in two): one row, seeds from both."""
    for part, seeds in (("first", {0, 1}), ("second", {2})):
        (tmp_path / part).mkdir()
        shutil.copy(MAIN / "config.json", tmp_path / part)
        lines = [line for line in (MAIN / "metrics.jsonl").read_text().splitlines() if json.loads(line)["seed"] in seeds]
        (tmp_path / part / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    r = run_compare("--run", str(tmp_path / "first"), "--run", str(tmp_path / "second"))
    assert r.code == 0, r.err
    assert r.out.splitlines()[2] == "| grpo_dapo | 3 | 0.686 ± 0.040 | 5.0 (2/3) | 0/3 | 0.414 | 0.00401 | 0.49 |"


def test_a_file_mixing_runs_nothing_tells_apart_is_refused(tmp_path, run_compare):
    twice = tmp_path / "metrics.jsonl"
    twice.write_text((MAIN / "metrics.jsonl").read_text() * 2)
    r = run_compare("--run", str(twice))
    assert r.code == 2 and len(r.err.splitlines()) == 1, r.err
    assert r.err.startswith(PROG + f"{twice}: step 0 of grpo [knob='', M='1'] seed 0 appears twice: the file mixes "
                            f"runs that nothing in their records tells apart"), r.err


def test_test_acc_as_the_held_out_metric(run_compare):
    r = run_compare("--run", str(MAIN), "--val-key", "test_acc")
    assert r.code == 0, r.err
    assert "final `test_acc` (mean ± std)" in r.out and "held-out metric: test_acc (given with --val-key)" in r.out
    r = run_compare("--run", str(MAIN), "--val-key", "val-core/x/acc/mean@1")
    assert r.code == 2 and re.search(r"--val-key 'val-core/x/acc/mean@1' is not logged by .*metrics.jsonl \(grpo "
                                     r"\[knob='', M='1', lr='3e-05'\]\); its held-out metrics: test_acc, val_acc$",
                                     r.err.strip()), r.err


@pytest.mark.parametrize("where,message", [
    ("M16", r"--where 'M16': expected KEY=VALUE with KEY one of knob, M, lr \(e.g. --where M=16\)"),
    ("seed=1", r"--where 'seed=1': expected KEY=VALUE with KEY one of knob, M, lr"),
    ("M=32", r"--where 'M=32' matches no run; the runs' M values: '1', '2', '4', '8', '16'"),
])
def test_a_bad_where_is_one_line(run_compare, where, message):
    r = run_compare("--run", str(SWEEP), "--where", where)
    assert r.code == 2 and len(r.err.splitlines()) == 1 and re.search(message, r.err), r.err


def test_where_on_a_verl_log_is_refused(tmp_path, run_compare):
    log = tmp_path / "sspo.jsonl"
    log.write_text(json.dumps({"step": 1, "data": {"critic/score/mean": 0.5}}) + "\n")
    r = run_compare("--run", f"sspo={log}", "--where", "M=16")
    assert r.code == 2 and f"--run 'sspo={log}' is a verl log" in r.err, r.err


def test_every_argument_is_checked_before_any_log_is_read(run_compare, monkeypatch):
    """A bad second --run or --where is reported before the (large) first file is read."""
    from sspo_verl.tools import run_logs

    def no_reading(path):
        raise AssertionError(f"read {path} before checking the arguments")

    monkeypatch.setattr(run_logs, "_text", no_reading)
    r = run_compare("--run", str(SWEEP), "--run", "sspo_without_a_path")
    assert r.code == 2 and "--run 'sspo_without_a_path': expected METHOD=PATH" in r.err, r.err
    r = run_compare("--run", str(SWEEP), "--where", "M16")
    assert r.code == 2 and "--where 'M16': expected KEY=VALUE" in r.err, r.err
