"""verl's real FSDP2 engine on CPU: one rollout batch, 4 mini-batches (the off-policy regime), every loss mode."""

import math

import pytest
import torch

from sspo_verl.verl_on_cpu import harness as h

pytestmark = pytest.mark.slow

MODES = ["vanilla", "gspo", "geo_mean", "sapo", "sspo", "sspo_arctan", "sspo_sigmoid", "sspo_erf", "sspo_softsign",
         "sspo_sapo"]
N_MINI, MINI, P, R = 4, 4, 8, 24
VOCAB = 512


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    h.use_cpu_platform()
    h.init_single_process_group()
    return h.make_tiny_model(tmp_path_factory.mktemp("tiny_qwen2"))


def _run(model_dir, mode):
    """Fresh engine; old log-probs of all mini-batches from the initial policy; then one step per mini-batch."""
    engine = h.make_engine(model_dir, micro_batch_size=2, lr=5e-3)
    minis = []
    for k in range(N_MINI):
        td = h.rollout_batch(MINI, P, R, VOCAB, seed=k)
        minis.append(h.rollout_batch(MINI, P, R, VOCAB, seed=k, old_log_probs=h.policy_log_probs(engine, td)))
    before = [p.detach().clone() for p in engine.module.parameters()]
    cfg = h.actor_config(mode, MINI, 2, clip_ratio_low=0.2, clip_ratio_high=0.28)
    outs, after_first = [], None
    for td in minis:
        outs.append(h.train_step(engine, td, cfg)["metrics"])
        after_first = after_first or [p.detach().clone() for p in engine.module.parameters()]
    moved = sum((p.detach() - q).abs().sum().item() for p, q in zip(engine.module.parameters(), before))
    return outs, moved, after_first


def _value(metric):
    return metric.aggregate() if hasattr(metric, "aggregate") else (metric[0] if isinstance(metric, list) else metric)


@pytest.fixture(scope="module")
def runs(model_dir):
    return {mode: _run(model_dir, mode) for mode in MODES}


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_trains_through_the_engine(runs, mode):
    outs, moved, _ = runs[mode]
    assert moved > 0
    for m in outs:
        assert math.isfinite(_value(m["actor/pg_loss"])) and math.isfinite(_value(m["grad_norm"]))


@pytest.mark.parametrize("mode", [m for m in MODES if m.startswith("sspo")])
def test_sspo_metrics_on_policy_then_off_policy(runs, mode):
    outs, _, _ = runs[mode]
    first, last = outs[0], outs[-1]
    # mini-batch 0 is on-policy: ratios are 1 up to float noise, so the gate is wide open
    assert _value(first["actor/sspo/log_ratio_abs_max"]) < 1e-4
    assert _value(first["actor/sspo/token_w_min"]) == pytest.approx(1.0, abs=1e-6)
    assert _value(first["actor/sspo/seq_s_max"]) == pytest.approx(1.0, abs=1e-4)
    assert _value(first["actor/pg_clipfrac"]) == 0.0
    # later mini-batches see a policy that has moved
    assert _value(last["actor/sspo/log_ratio_abs_max"]) > 1e-3
    if mode == "sspo_sapo":  # its normalized weight 2 r sigmoid(-tau (r - 1)) is not bell-shaped: above 1 just past r = 1
        assert abs(_value(last["actor/sspo/token_w_mean"]) - 1.0) > 1e-6
    else:
        assert _value(last["actor/sspo/token_w_mean"]) < 1.0
    for key in ("actor/sspo/seq_s_min", "actor/sspo/seq_s_mean", "actor/sspo/seq_s_max"):
        assert 0 < _value(last[key]) < 10, key


@pytest.mark.parametrize("mode", [m for m in MODES if m.startswith("sspo")] + ["sapo"])
def test_on_policy_first_step_is_the_plain_policy_gradient(runs, mode):
    # vanilla is the plain policy gradient on-policy (no clip is active at r = 1); same weights, same batch
    plain = _value(runs["vanilla"][0][0]["grad_norm"])
    assert _value(runs[mode][0][0]["grad_norm"]) == pytest.approx(plain, rel=1e-4)
    # and the whole update: Adam's first step moves each weight by ~lr * sign(g), so a gradient that differed
    # in any coordinate's sign would move it by 2 lr (1e-2) instead of agreeing to float noise
    for p, q in zip(runs[mode][2], runs["vanilla"][2]):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-4)


def test_verl_geo_mean_first_step_is_scaled_by_the_micro_batch_count(runs):
    # verl's geo_mean aggregates with torch.mean per micro-batch (2 per mini-batch here): its on-policy gradient is
    # the plain one times the micro-batch count. SSPO, aggregating through agg_loss, is not (test above).
    plain = _value(runs["vanilla"][0][0]["grad_norm"])
    assert _value(runs["geo_mean"][0][0]["grad_norm"]) == pytest.approx(2 * plain, rel=1e-4)
