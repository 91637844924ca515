"""The transformers rollout backend (sspo_verl/verl_on_cpu/cpu_rollout.py): sampling against transformers' own
forward pass, the agent loop's sampling params, the server's batching and weight updates, and its registration in
verl's registries. The whole path through main_ppo is tests/e2e/test_cpu_main_ppo.py."""

from __future__ import annotations

import asyncio
import importlib
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

MODULES_DIR = Path(__file__).resolve().parents[2] / "sspo_verl" / "verl_on_cpu"


@pytest.fixture(scope="module")
def cpu_rollout():
    """The module as verl's processes load it: top-level, from its folder (VERL_USE_EXTERNAL_MODULES)."""
    sys.path.insert(0, str(MODULES_DIR))
    try:
        yield importlib.import_module("cpu_rollout")
    finally:
        sys.path.remove(str(MODULES_DIR))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random tiny Qwen2 with the CPU recipe's byte tokenizer: (folder, model, tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from sspo_verl.testbed.cpu_recipe import build_tokenizer

    path = tmp_path_factory.mktemp("tiny")
    tokenizer = build_tokenizer(path)
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():  # logits spread enough that greedy never meets a tie (top token p ~ 0.07, not peaked)
        model.lm_head.weight.mul_(20)
    model.save_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa").eval()
    return path, model, AutoTokenizer.from_pretrained(path)


PROMPTS = ["1+2=", "13-4+6=", "Ann has 3 coins. She gets 4.", "x"]


def requests(cpu_rollout, tokenizer, n_tokens=6, **params):
    return [cpu_rollout.sampling_request({"max_tokens": n_tokens, **params}, tokenizer.encode(p), 64, 16, 256)
            for p in PROMPTS]


def teacher_forced_log_probs(model, prompt_ids, response_ids, temperature=1.0):
    """log softmax(logits / T) of each response token, from one forward pass of the unpadded sequence."""
    ids = torch.tensor([prompt_ids + response_ids])
    logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1].float() / temperature  # (R, V)
    return F.log_softmax(logits, -1).gather(1, torch.tensor(response_ids)[:, None]).squeeze(1)


def test_greedy_batch_equals_transformers_generate_one_by_one(cpu_rollout, tiny):
    """Left padding, position ids and the KV cache: a batch of prompts of different lengths decodes exactly as
    transformers' own generate decodes each prompt alone."""
    _, model, tok = tiny
    got = cpu_rollout.sample(model, requests(cpu_rollout, tok, temperature=0), tok.pad_token_id, {tok.eos_token_id})
    for prompt, (token_ids, _) in zip(PROMPTS, got):
        ids = torch.tensor([tok.encode(prompt)])
        ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)[0, ids.shape[1]:]
        assert token_ids == ref.tolist(), prompt


@pytest.mark.parametrize("temperature", [0.7, 1.0, 1.5])
def test_log_probs_are_what_verls_actor_recomputes(cpu_rollout, tiny, temperature):
    """processed log-probs with top_p = 1 and no top_k are log softmax(logits / T) of the sampled tokens, the
    quantity verl's actor computes as old_log_prob at the rollout temperature."""
    _, model, tok = tiny
    got = cpu_rollout.sample(model, requests(cpu_rollout, tok, temperature=temperature, logprobs=True),
                             tok.pad_token_id, {tok.eos_token_id}, torch.Generator().manual_seed(0))
    for prompt, (token_ids, log_probs) in zip(PROMPTS, got):
        ref = teacher_forced_log_probs(model, tok.encode(prompt), token_ids, temperature)
        torch.testing.assert_close(torch.tensor(log_probs), ref, atol=2e-5, rtol=0)


def test_raw_log_probs_ignore_temperature(cpu_rollout, tiny):
    _, model, tok = tiny
    got = cpu_rollout.sample(model, requests(cpu_rollout, tok, temperature=1.7), tok.pad_token_id,
                             {tok.eos_token_id}, torch.Generator().manual_seed(1), logprobs_mode="raw_logprobs")
    for prompt, (token_ids, log_probs) in zip(PROMPTS, got):
        torch.testing.assert_close(torch.tensor(log_probs), teacher_forced_log_probs(model, tok.encode(prompt),
                                                                                     token_ids), atol=2e-5, rtol=0)


def test_samples_follow_the_models_distribution(cpu_rollout, tiny):
    """The first sampled token's frequencies over many draws match softmax(logits / T) (4000 draws: each
    frequency within 5 standard errors)."""
    _, model, tok = tiny
    prompt = tok.encode("13-4+6=")
    reqs = [cpu_rollout.sampling_request({"max_tokens": 1, "temperature": 1.3}, prompt, 64, 16, 256)] * 4000
    got = cpu_rollout.sample(model, reqs, tok.pad_token_id, {tok.eos_token_id}, torch.Generator().manual_seed(2))
    counts = torch.bincount(torch.tensor([ids[0] for ids, _ in got]), minlength=len(tok)).double()
    p = F.softmax(model(input_ids=torch.tensor([prompt])).logits[0, -1].double() / 1.3, -1)
    stderr = (p * (1 - p) / 4000).sqrt()
    assert ((counts / 4000 - p).abs() <= 5 * stderr + 1e-3).all()


def test_top_k_and_top_p_truncate_each_row(cpu_rollout):
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0]])
    probs = F.softmax(logits, -1)  # row 0: 0.644, 0.237, 0.087, 0.032
    out = cpu_rollout._filter_top_k_top_p(logits, torch.tensor([2, -1, 1]), torch.tensor([1.0, 0.8, 1.0]))
    kept = torch.isfinite(out)
    assert kept.tolist() == [[True, True, False, False],  # top-2
                             [False, False, True, True],  # nucleus 0.8: 0.644 + 0.237 >= 0.8 (tokens 3, 2)
                             [True, False, False, False]]  # top-1 of a tie: one token, the first
    assert torch.equal(out[kept], logits[kept])  # kept logits are unchanged
    assert probs[0, :2].sum() < 0.9  # (the nucleus row is not trivially everything)


def test_top_k_1_and_tiny_top_p_are_greedy(cpu_rollout, tiny):
    _, model, tok = tiny
    greedy = cpu_rollout.sample(model, requests(cpu_rollout, tok, temperature=0), tok.pad_token_id, {-1})
    for params in ({"top_k": 1}, {"top_p": 1e-6}):
        got = cpu_rollout.sample(model, requests(cpu_rollout, tok, temperature=1.0, **params), tok.pad_token_id,
                                 {-1}, torch.Generator().manual_seed(3))
        assert [ids for ids, _ in got] == [ids for ids, _ in greedy]


def test_rows_stop_at_eos_included_or_at_their_own_max_tokens(cpu_rollout, tiny):
    _, model, tok = tiny
    greedy = cpu_rollout.sample(model, requests(cpu_rollout, tok, temperature=0), tok.pad_token_id, {-1})
    third = greedy[0][0][2]  # make the 3rd greedy token of prompt 0 an EOS
    reqs = requests(cpu_rollout, tok, temperature=0)
    reqs[1].max_tokens = 2
    reqs[2].ignore_eos = True
    got = cpu_rollout.sample(model, reqs, tok.pad_token_id, {third})
    assert got[0][0] == greedy[0][0][:3]  # stops after the EOS, which is returned
    assert got[1][0] == greedy[1][0][:2]  # its own max_tokens
    assert got[2][0] == greedy[2][0]  # ignore_eos: runs to max_tokens whatever it emits
    for (ids, lp), (ref, _) in zip(got, greedy):
        assert len(ids) == len(lp) and ids == ref[:len(ids)]


def test_sampling_params_as_the_agent_loop_sends_them(cpu_rollout):
    """verl's agent loop sends temperature, top_p, top_k, repetition_penalty and logprobs; max_tokens comes, as in
    verl's vLLM server, from what the prompt leaves of prompt_length + response_length, capped at response_length."""
    params = dict(temperature=0.9, top_p=0.95, top_k=-1, repetition_penalty=1.0, logprobs=True)
    r = cpu_rollout.sampling_request(params, [1] * 10, 64, 16, 80)
    assert (r.temperature, r.top_p, r.top_k, r.max_tokens, r.want_log_probs) == (0.9, 0.95, -1, 16, True)
    assert cpu_rollout.sampling_request(params, [1] * 70, 64, 16, 80).max_tokens == 10  # 64 + 16 - 70
    assert cpu_rollout.sampling_request({**params, "max_tokens": 30}, [1] * 70, 64, 16, 80).max_tokens == 10  # context
    assert cpu_rollout.sampling_request({"max_new_tokens": 3}, [1], 64, 16, 80).max_tokens == 3
    assert params["temperature"] == 0.9  # the caller's dict is not consumed
    with pytest.raises(ValueError, match="repetition_penalty"):
        cpu_rollout.sampling_request({"repetition_penalty": 1.1}, [1], 64, 16, 80)
    with pytest.raises(ValueError, match="min_p"):
        cpu_rollout.sampling_request({"min_p": 0.1}, [1], 64, 16, 80)
    with pytest.raises(ValueError, match="max_model_len"):
        cpu_rollout.sampling_request({}, [1] * 80, 64, 16, 80)
    with pytest.raises(ValueError, match="top_p"):
        cpu_rollout.sampling_request({"top_p": 0.0}, [1], 64, 16, 80)


def _server(cpu_rollout, path, **rollout):
    from verl.workers.config import HFModelConfig, RolloutConfig

    config = RolloutConfig(name="hf", prompt_length=64, response_length=8, max_num_seqs=64, **rollout)
    server_cls = getattr(cpu_rollout.HFRolloutServer, "__ray_actor_class__", cpu_rollout.HFRolloutServer)
    return server_cls(config, HFModelConfig(path=str(path)), cpu_rollout.RolloutMode.HYBRID, 0, 0)


def test_server_batches_concurrent_requests_and_answers_each_as_alone(cpu_rollout, tiny):
    """The agent loop sends one request per sample, concurrently: they are sampled in batches, and each answer
    is the greedy answer of its prompt alone (no mix-up between rows)."""
    path, model, tok = tiny
    server = _server(cpu_rollout, path)
    greedy = {p: ids for p, (ids, _) in zip(PROMPTS, cpu_rollout.sample(
        model, requests(cpu_rollout, tok, n_tokens=8, temperature=0), tok.pad_token_id, server.eos_ids))}

    async def run():
        prompts = PROMPTS * 10
        outs = await asyncio.gather(*[server.generate(prompt_ids=tok.encode(p), request_id=str(i),
                                                      sampling_params={"temperature": 0, "logprobs": i % 2 == 0})
                                      for i, p in enumerate(prompts)])
        return prompts, outs

    prompts, outs = asyncio.run(run())
    assert all(out.token_ids == greedy[p] for p, out in zip(prompts, outs))
    assert all((out.log_probs is not None) == (i % 2 == 0) for i, out in enumerate(outs))
    assert all(out.stop_reason == "completed" for out in outs)
    assert server.stats["requests"] == 40 and server.stats["batches"] < 40  # batched, not one by one


def test_server_takes_the_actors_weights_and_refuses_a_partial_update(cpu_rollout, tiny):
    path, model, tok = tiny
    server = _server(cpu_rollout, path)
    prompt = tok.encode("13-4+6=")

    async def greedy():
        return (await server.generate(prompt_ids=prompt, sampling_params={"temperature": 0, "max_tokens": 6},
                                      request_id="r")).token_ids

    before = asyncio.run(greedy())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["lm_head.weight"] = torch.flip(state["lm_head.weight"], [0])  # a different policy, same shapes
    assert asyncio.run(server.update_weights(state, global_steps=3)) == 1
    after = asyncio.run(greedy())
    ref = cpu_rollout.sample(_model_with(path, state), [cpu_rollout.sampling_request(
        {"temperature": 0, "max_tokens": 6}, prompt, 64, 8, 72)], tok.pad_token_id, server.eos_ids)[0][0]
    assert after == ref and after != before
    assert server.get_stats()["global_steps"] == 3
    del state["model.norm.weight"]
    with pytest.raises(ValueError, match="missing.*model.norm.weight"):
        asyncio.run(server.update_weights(state))
    assert asyncio.run(greedy()) == after  # the refused update changed nothing


def _model_with(path, state):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa").eval()
    model.load_state_dict(state)
    return model


def test_server_refuses_a_logprobs_mode_it_cannot_serve(cpu_rollout, tiny):
    with pytest.raises(ValueError, match="logprobs_mode='processed_logits'"):
        _server(cpu_rollout, tiny[0], logprobs_mode="processed_logits")


def test_registered_in_verls_registries_only_once_imported(cpu_rollout):
    """Importing the module is what registers `hf`: the replica class and the worker-side adapter resolve through
    verl's own lookups, as the trainer and ActorRolloutRefWorker call them."""
    from verl.workers.rollout.base import get_rollout_class
    from verl.workers.rollout.replica import get_rollout_replica_class

    assert get_rollout_replica_class("hf") is cpu_rollout.HFReplica
    assert get_rollout_class("hf", "async") is cpu_rollout.HFServerAdapter


def test_not_registered_by_the_plugin():
    """`import sspo_verl` (what verl's entry point does in every process) never registers the backend."""
    import subprocess

    code = ("import sspo_verl, verl.workers.rollout.replica as r, verl.workers.rollout.base as b; "
            "print('hf' in r.RolloutReplicaRegistry._registry, ('hf', 'async') in b._ROLLOUT_REGISTRY)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
