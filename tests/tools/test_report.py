"""The run summary: final accuracy, steps to the baseline's accuracy and collapses, from hand-made records."""

import math

import pytest

from sspo_verl.tools.report import markdown_table, plot, summarize, write_report


def _run(method, seed, accs, rewards=None, **extra):
    """Records of one run: val_acc at every step (accs), reward at every step but the last."""
    rewards = rewards or [0.1] * len(accs)
    out = []
    for step, acc in enumerate(accs):
        r = {"method": method, "seed": seed, "step": step, "val_acc": acc, "entropy": 1.0 - 0.1 * step}
        if step < len(accs) - 1:
            r |= {"reward": rewards[step], "token_iw_var": 0.5, "seq_iw_var": 0.1, "ppo_kl": 0.01, **extra}
        out.append(r)
    return out


RECORDS = (_run("grpo", 0, [0.2, 0.3, 0.4]) + _run("grpo", 1, [0.2, 0.2, 0.2])  # target = mean(0.4, 0.2) = 0.3
           + _run("sspo", 0, [0.2, 0.35, 0.5]) + _run("sspo", 1, [0.2, 0.6, 0.1]))  # seed 1 collapses


def test_summary_by_hand():
    base, sspo = summarize(RECORDS, baseline="grpo")
    assert (base.method, sspo.method) == ("grpo", "sspo")
    assert base.final_acc_mean == pytest.approx(0.3) and base.final_acc_std == pytest.approx(0.1)
    assert sspo.final_acc_mean == pytest.approx(0.3) and sspo.final_acc_std == pytest.approx(0.2)
    assert base.steps_to_target == [1, None]  # 0.3 at step 1; seed 1 never reaches 0.3
    assert sspo.steps_to_target == [1, 1]
    assert (base.collapses, sspo.collapses) == (0, 1)  # 0.1 < 0.5 * 0.6 and 0.5 below it
    assert sspo.final_entropy == pytest.approx(0.8) and sspo.token_iw_var == pytest.approx(0.5)


def test_the_starting_point_does_not_count_as_reaching_the_target():
    # the baseline ends below where everyone started: reaching its final accuracy takes a step after the start
    records = _run("grpo", 0, [0.4, 0.2, 0.3]) + _run("sspo", 0, [0.4, 0.1, 0.1])
    base, sspo = summarize(records, "grpo")
    assert base.steps_to_target == [2] and sspo.steps_to_target == [None]


def test_collapse_needs_a_real_drop_and_counts_non_finite_losses():
    noise = _run("a", 0, [0.0, 0.03, 0.01])  # below half its best, but only 0.02 below: evaluation noise
    nan = _run("b", 0, [0.2, 0.3, 0.3], pg_loss=math.nan)
    (a,) = summarize(noise, "a")
    (_, b) = summarize(noise + nan, "a")
    assert a.collapses == 0 and b.collapses == 1


def test_table_and_unknown_baseline():
    table = markdown_table(summarize(RECORDS, "grpo"))
    assert "| grpo | 2 | 0.300 ± 0.100 | 1.0 (1/2) | 0/2 |" in table
    assert "| sspo | 2 | 0.300 ± 0.200 | 1.0 (2/2) | 1/2 |" in table
    with pytest.raises(ValueError, match="baseline 'gspo' has no records; methods present: grpo, sspo"):
        summarize(RECORDS, "gspo")


def test_report_writes_plots_and_summary(tmp_path):
    path = write_report(RECORDS, tmp_path, "grpo", "# title")
    text = path.read_text()
    assert text.startswith("# title") and "| sspo | 2 |" in text
    for name in ("reward_accuracy.png", "importance_weights.png", "entropy.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"({name})" in text
    # a log without importance weights still plots what it has
    bare = [{k: v for k, v in r.items() if k in ("method", "seed", "step", "reward")} for r in RECORDS]
    (tmp_path / "bare").mkdir()
    assert [p.name for p in plot(bare, tmp_path / "bare")] == ["reward_accuracy.png"]


def test_each_axis_names_its_metric_and_an_empty_panel_says_so():
    """A real verl run logs no importance-weight variance: that panel used to be an empty 0-1 axis."""
    import matplotlib.pyplot as plt

    from sspo_verl.tools.report import FIGURES, figures

    verl_like = [{k: v for k, v in r.items() if k not in ("token_iw_var", "seq_iw_var")} for r in RECORDS]
    drawn = figures(verl_like)
    try:
        assert sorted(drawn) == sorted(FIGURES)
        for name, fig in drawn.items():
            for ax, (key, _, _) in zip(fig.axes, FIGURES[name]):
                assert ax.get_ylabel() == key
                empty = key in ("token_iw_var", "seq_iw_var")
                assert bool(ax.lines) is not empty
                assert [t.get_text() for t in ax.texts] == ([f"no run logged {key}"] if empty else [])
    finally:
        for fig in drawn.values():
            plt.close(fig)
