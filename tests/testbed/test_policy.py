"""The testbed's policy: sampling layout, greedy evaluation and the cold start."""

import pytest
import torch

from sspo_verl.testbed import policy as pol
from sspo_verl.testbed.arithmetic import ArithmeticTask, build_tokenizer, flawed

TASK = ArithmeticTask(n_operands=2, max_operand=9)
P, R = TASK.max_prompt_chars, TASK.response_len


def _model(tmp_path, seed=0):
    tok = build_tokenizer()
    return pol.load_policy(pol.make_policy(tmp_path / f"m{seed}", tok, "small", seed=seed)), tok


def test_sample_layout_matches_verl(tmp_path):
    model, tok = _model(tmp_path)
    problems = TASK.problems(16, seed=0)
    ids, mask = pol.encode_prompts(tok, problems, P)
    assert (mask.sum(1) == torch.tensor([len(p.prompt) for p in problems])).all() and (mask[:, -1] == 1).all()
    g = torch.Generator().manual_seed(0)
    resp, resp_mask = pol.sample(model, ids, mask, R, tok.eos_token_id, tok.pad_token_id, generator=g)
    assert resp.shape == resp_mask.shape == (16, R)
    for row, m in zip(resp, resp_mask):
        n = int(m.sum())
        assert (m[:n] == 1).all() and (m[n:] == 0).all()  # right-padded
        assert (row[n:] == tok.pad_token_id).all()
        eos = (row[:n] == tok.eos_token_id).nonzero()
        assert len(eos) == 0 or (len(eos) == 1 and eos[0, 0] == n - 1)  # EOS, when present, is the last real token
    again = pol.sample(model, ids, mask, R, tok.eos_token_id, tok.pad_token_id, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again[0], resp)


def test_sampler_log_probs_equal_a_full_forward(tmp_path):
    """The KV-cached sampler and a full forward (what verl's engine computes) score tokens the same way."""
    model, tok = _model(tmp_path)
    problems = TASK.problems(8, seed=1)
    ids, mask = pol.encode_prompts(tok, problems, P)
    resp, resp_mask = pol.sample(model, ids, mask, R, tok.eos_token_id, tok.pad_token_id, greedy=True)
    attn = torch.cat([mask, resp_mask], 1)
    with torch.no_grad():
        logits = model(input_ids=torch.cat([ids, resp], 1), attention_mask=attn, position_ids=pol.position_ids(attn)).logits
    greedy = logits[:, P - 1:-1].argmax(-1)  # (B, R) what the full forward would pick
    assert torch.equal(greedy[resp_mask.bool()], resp[resp_mask.bool()])


@pytest.mark.slow
def test_cold_start_learns_the_task(tmp_path):
    model, tok = _model(tmp_path)
    heldout = TASK.problems(128, seed=1)
    before = pol.accuracy(model, tok, heldout, P, R)
    losses = []
    pol.cold_start(model, tok, TASK, steps=100, batch_size=48, lr=3e-3, seed=0, prompt_len=P, response_len=R,
                   on_step=lambda step, loss: losses.append(loss))
    after = pol.accuracy(model, tok, heldout, P, R)
    assert before < 0.05 and after > before + 0.1
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10])


def test_demonstrations_mix_right_and_flawed_targets():
    task = ArithmeticTask(n_operands=3, max_operand=9)
    pairs = pol.demonstrations(task, 4000, seed=0, flawed_fraction=0.7)
    assert pairs == pol.demonstrations(task, 4000, seed=0, flawed_fraction=0.7)
    wrong = [p for p, target in pairs if target != p.solution]
    assert 0.67 < len(wrong) / len(pairs) < 0.73
    for p, target in pairs:
        assert target in (p.solution, flawed(p))
    assert all(t == p.solution for p, t in pol.demonstrations(task, 500, seed=0))
    with pytest.raises(ValueError, match="flawed_fraction=1.0 must be in"):
        pol.demonstrations(task, 10, seed=0, flawed_fraction=1.0)
