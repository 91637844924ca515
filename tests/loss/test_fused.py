"""The fused fast path equals the readable reference (float64), for every gate, and saves one tensor."""

import pytest
import torch

from sspo_verl.loss.fused import sspo_token_loss_fused
from sspo_verl.loss.gates import GATES, Gate, get_gate
from sspo_verl.loss.objective import sspo_token_loss

from ..helpers import random_batch


def _both(batch, gate, tau_pos, tau_neg, weights=None):
    out = []
    for fn in (sspo_token_loss, sspo_token_loss_fused):
        lp = batch.log_prob.detach().clone().requires_grad_(True)
        loss_mat, stats = fn(lp, batch.old_log_prob, batch.advantages, batch.mask, gate, tau_pos, tau_neg)
        w = torch.rand(loss_mat.shape, generator=torch.Generator().manual_seed(1), dtype=loss_mat.dtype) if weights else 1.0
        (torch.where(batch.mask, loss_mat * w, 0.0)).sum().backward()
        out.append((loss_mat.detach(), lp.grad, stats))
    return out


@pytest.mark.parametrize("name", list(GATES) + ["sapo"])  # sapo: sspo_sapo's gate, its own fused function
@pytest.mark.parametrize("tau_pos,tau_neg", [(1.0, 1.05), (0.3, 4.0)])
@pytest.mark.parametrize("token_adv", [False, True])
def test_fused_equals_reference_in_float64(name, tau_pos, tau_neg, token_adv):
    batch = random_batch(B=9, T=17, seed=30, scale=2.0, token_adv=token_adv)
    batch.mask[2] = False
    with torch.no_grad():
        batch.log_prob[~batch.mask] = float("nan")  # padding garbage must not leak into either path
    (ref_loss, ref_grad, ref_stats), (loss, grad, stats) = _both(batch, get_gate(name), tau_pos, tau_neg, weights=True)
    valid = batch.mask
    torch.testing.assert_close(loss[valid], ref_loss[valid], rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-13, atol=1e-15)
    for field, value in stats.as_floats().items():
        if field != "n_bad":
            assert value == pytest.approx(ref_stats.as_floats()[field], rel=1e-13, abs=1e-15), field
    assert stats.n_bad.item() == 0 and ref_stats.n_bad.item() == 0


def test_user_gate_falls_back_to_its_own_functions():
    gate = Gate("algebraic", lambda x, t: x / torch.sqrt(1 + (t * x) ** 2), lambda x, t: (1 + (t * x) ** 2) ** -1.5,
                lambda t: 1 / t, "")
    (ref_loss, ref_grad, _), (loss, grad, _) = _both(random_batch(seed=31, scale=1.5), gate, 1.0, 2.0)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-13, atol=1e-15)


def test_nan_flag_and_dtypes():
    batch = random_batch(B=3, T=5, seed=32, dtype=torch.bfloat16)
    loss_mat, stats = sspo_token_loss_fused(batch.log_prob, batch.old_log_prob, batch.advantages, batch.mask, GATES["arctan"], 1.0, 1.05)
    assert loss_mat.dtype == torch.float32 and stats.n_bad.item() == 0
    loss_mat.sum().backward()
    assert batch.log_prob.grad.dtype == torch.bfloat16
    old = batch.old_log_prob.clone()
    old[0, 0] = float("nan")
    _, stats = sspo_token_loss_fused(batch.log_prob, old, batch.advantages, batch.mask, GATES["arctan"], 1.0, 1.05)
    assert stats.n_bad.item() == 1


def test_fused_saves_one_tensor_for_backward():
    batch = random_batch(B=4, T=64, seed=33, dtype=torch.float32)
    saved = {}
    for name, fn in (("reference", sspo_token_loss), ("fused", sspo_token_loss_fused)):
        sizes = []

        def pack(t, sizes=sizes):
            sizes.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn(batch.log_prob, batch.old_log_prob, batch.advantages, batch.mask, GATES["arctan"], 1.0, 1.05)
        saved[name] = sum(sizes)
    full = 4 * 64 * 4  # one fp32 (B, T) tensor
    assert saved["fused"] == full
    assert saved["reference"] >= 3 * full
