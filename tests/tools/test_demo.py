"""`make demo` (python -m sspo_verl.tools.demo): what it prints is labelled as what it is, with hand-checked rows."""

import math
import re

import pytest

from sspo_verl.tools import demo


@pytest.fixture(scope="module")
def printed():
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert demo.main([]) == 0
    return out.getvalue()


def _factor_rows(printed: str, advantage: str) -> dict[str, list[float]]:
    block = printed.split(f"{demo.FACTOR_LABEL}, A = {advantage}\n", 1)[1].split("\n\n", 1)[0]
    rows = [line.split() for line in block.splitlines()]
    return {row[0] if row[0] != "ratio" else "r": [float(v) for v in row[-8:]] for row in rows}


def test_it_prints_the_gradient_factor_under_its_own_label(printed):
    assert "gradient factor -d loss / d log pi / A" in demo.FACTOR_LABEL and "s_i * w" in demo.FACTOR_LABEL
    assert "gradient weight (1 = plain policy gradient)" not in printed  # the old label, for s_i * w up to 2.1
    for advantage in ("+1", "-1"):
        rows = _factor_rows(printed, advantage)
        assert rows["r"] == [0.25, 0.5, 0.8, 1.0, 1.25, 1.5, 2.0, 4.0]
        assert {row[3] for mode, row in rows.items() if mode != "r"} == {1.0}  # r = 1: the plain gradient, every mode
        assert rows["sspo_sapo"] == rows["sapo"]  # one-token responses: sspo_sapo is SAPO


def test_factors_above_one_are_the_importance_weight(printed):
    rows = _factor_rows(printed, "+1")
    assert rows["vanilla"][4] == 1.25  # inside the clip band PPO's factor is r itself
    # sspo_sigmoid at r = 4, tau = 1: s = g(4) = exp(2 tanh(log 4 / 2)) = exp(1.2), w = 1 - tanh^2 = 0.64
    assert rows["sspo_sigmoid"][7] == round(math.exp(1.2) * 0.64, 3) == 2.125


def test_the_off_policy_table_has_every_mode(printed):
    table = printed.split("via verl's loss contract\n", 1)[1]
    for mode in [*demo.BASELINES, *demo.SSPO_MODES]:
        assert re.search(rf"^\s*{mode} ", table, re.M), mode
    assert "sspo_sapo" in demo.SSPO_MODES


def test_a_bad_argument_is_one_line(capsys):
    with pytest.raises(SystemExit) as ended:
        demo.main(["--seed", "x"])
    assert ended.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m sspo_verl.tools.demo: error: argument --seed: invalid int value") and err.count("\n") == 1
