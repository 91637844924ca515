"""The testbed's and the sweep's command lines: every argument checked before any work, a user error in one line
naming the flag and the fix (exit 2), a missing matplotlib reported before work, and the task presets."""

import importlib.util
import subprocess
import sys

import pytest

from sspo_verl.testbed import options, run, sweep

BAD = [  # (arguments, what the one line must say)
    (["--operands", "1"], "--operands 1: must be at least 2"),
    (["--operands", "40"], "--operands 40 --max-operand 9 --total-width 0: a problem and its longest solution take"),
    (["--operands", "2", "--heldout", "900"], "--heldout 900: the task has about 25 problems per held-out split"),
    (["--lr", "0"], "--lr 0.0: the learning rate must be a positive number"),
    (["--flawed-fraction", "1"], "--flawed-fraction 1.0: must be in [0, 1)"),
    (["--model-size", "huge"], "--model-size huge: choose one of small, medium"),
    (["--seeds", "0"], "--seeds 0: must be at least 1"),
    (["--steps", "0"], "--steps 0: must be at least 1"),
    (["--group-size", "1"], "--group-size 1: must be at least 2"),
    (["--workers", "0"], "--workers 0: must be at least 1"),
    (["--total-width", "-1"], "--total-width -1: must be at least 0"),
    (["--methods", "grpo_dapo,ppo"], "--methods: unknown method(s) ppo; choose from grpo"),
    (["--task", "medium"], "argument --task: invalid choice: 'medium'"),
]


@pytest.mark.parametrize("parse", [run.parse_args, lambda argv: sweep.parse_args(argv + ["--out", "x"])],
                         ids=["testbed", "sweep"])
@pytest.mark.parametrize("argv,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_a_bad_argument_is_one_line_naming_the_flag(parse, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and err.count("\n") == 1 and err.endswith("(see --help)\n")


ONE_CLI = [  # (parse, arguments, what the one line must say)
    (run.parse_args, ["--mini-batches", "3"], "--mini-batches 3 must divide --prompts 32"),
    (run.parse_args, ["--tau-pos", "-1"], "--tau-pos -1.0: a temperature is a positive number"),
    (run.parse_args, ["--tau-from-clip", "0.2", "-1"], "--tau-from-clip 0.2 -1.0: clip_high=-1.0"),
    (run.parse_args, ["--on-policy-control", "ppo"], "--on-policy-control: unknown method(s) ppo"),
    (sweep.parse_args, ["--mini-batches", "1,x", "--out", "x"], "--mini-batches '1,x': give comma-separated numbers"),
    (sweep.parse_args, ["--mini-batches", "1,3", "--out", "x"], "--mini-batches 3 must divide --prompts 32"),
    (sweep.parse_args, ["--widths", "0", "--out", "x"], "--widths 0.0: each width is a positive factor"),
]


@pytest.mark.parametrize("parse,argv,message", ONE_CLI, ids=[" ".join(a) for _, a, _ in ONE_CLI])
def test_flags_of_one_cli(parse, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and err.count("\n") == 1


@pytest.mark.parametrize("module", ["sspo_verl.testbed", "sspo_verl.testbed.sweep"])
def test_the_cli_refuses_before_any_work(module, tmp_path):
    """A bad --operands used to fail in a worker after the cold start; now nothing is built and no folder made."""
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", module, "--task", "long", "--operands", "30", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"python -m {module}: error: --operands 30 --max-operand 9 --total-width 3:")
    assert "use fewer operands (at most" in proc.stderr and proc.stderr.count("\n") == 1 and not out.exists()


def test_missing_matplotlib_is_reported_before_work(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    with pytest.raises(SystemExit):
        run.parse_args([])
    err = capsys.readouterr().err
    assert "needs matplotlib, which is not installed: pip install 'sspo-verl[testbed]'" in err and err.count("\n") == 1


def test_the_presets_and_an_explicit_flag_over_them():
    short, long_ = run.parse_args([]), run.parse_args(["--task", "long"])
    assert (short.operands, short.total_width, short.sft_steps) == (3, 0, 300)
    assert (long_.operands, long_.total_width) == (options.TASKS["long"]["operands"], options.TASKS["long"]["total_width"])
    assert long_.task_spec.response_len > 40 and long_.sft_steps == options.TASKS["long"]["sft_steps"]
    assert run.parse_args(["--task", "long", "--operands", "10"]).task_spec.n_operands == 10
    assert sweep.parse_args(["--task", "long", "--out", "x"]).task_spec == long_.task_spec
