"""The testbed's policy: a tiny Qwen2 built from a config, its supervised cold start, and sampling.

Sequences use verl's rollout layout throughout: prompts left-padded to P, responses right-padded to R,
position ids counted over real tokens, so the engine's recomputed log-probs match the sampler's.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .arithmetic import ArithmeticTask, Problem, flawed, reward
from ..verl_on_cpu.harness import position_ids

MAX_POSITIONS = 128  # the policy's positions: a prompt and its longest response must fit (options.py checks it)
MODEL_SIZES = {  # Qwen2 architecture; "small" 0.31M parameters (CPU), "medium" ~10M (GPU)
    "small": dict(hidden_size=96, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2),
    "medium": dict(hidden_size=384, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=6,
                   num_key_value_heads=2),
}


def make_policy(path: str | Path, tokenizer, size: str = "small", seed: int = 0) -> Path:
    """Save a randomly initialized Qwen2 of `size` with `tokenizer` to `path` (no downloads)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if size not in MODEL_SIZES:
        raise ValueError(f"unknown model size {size!r}; choose one of {sorted(MODEL_SIZES)}")
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tokenizer), max_position_embeddings=MAX_POSITIONS, tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.eos_token_id, **MODEL_SIZES[size])
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return Path(path)


def load_policy(path: str | Path, device: str = "cpu"):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa", dtype=torch.float32).to(device)


def encode_prompts(tokenizer, problems: list[Problem], prompt_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompt ids and mask, both (B, P)."""
    ids = torch.full((len(problems), prompt_len), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(problems):
        tok = tokenizer.encode(p.prompt)
        ids[i, prompt_len - len(tok):] = torch.tensor(tok)
        mask[i, prompt_len - len(tok):] = 1
    return ids, mask


def encode_solutions(tokenizer, solutions: list[str], response_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded solution texts with EOS, ids and mask (B, R)."""
    ids = torch.full((len(solutions), response_len), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, text in enumerate(solutions):
        tok = tokenizer.encode(text) + [tokenizer.eos_token_id]
        ids[i, : len(tok)] = torch.tensor(tok)
        mask[i, : len(tok)] = 1
    return ids, mask


@torch.no_grad()
def sample(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, response_len: int, eos_id: int, pad_id: int,
           generator: torch.Generator | None = None, greedy: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Responses from `model` at temperature 1 (or greedy), right-padded after EOS: ids and mask, (B, R).

    The mask covers every generated token up to and including EOS, as verl's response_mask does."""
    from transformers import DynamicCache

    B = prompt_ids.shape[0]
    device = prompt_ids.device
    mask = prompt_mask.clone()  # (B, P + t)
    out = model(input_ids=prompt_ids, attention_mask=mask, position_ids=position_ids(mask),
                past_key_values=DynamicCache(), use_cache=True)
    responses = torch.full((B, response_len), pad_id, dtype=torch.long, device=device)
    response_mask = torch.zeros(B, response_len, dtype=torch.long, device=device)
    alive = torch.ones(B, dtype=torch.bool, device=device)
    next_pos = mask.sum(1, keepdim=True)  # (B, 1) position of the next token
    for t in range(response_len):
        logits = out.logits[:, -1].float()  # (B, V)
        if greedy:
            token = logits.argmax(-1)
        else:
            token = torch.multinomial(F.softmax(logits, -1), 1, generator=generator).squeeze(1)  # (B,)
        token = torch.where(alive, token, torch.full_like(token, pad_id))
        responses[:, t] = token
        response_mask[:, t] = alive.long()
        alive = alive & (token != eos_id)
        if not alive.any():
            break
        mask = torch.cat([mask, torch.ones(B, 1, dtype=mask.dtype, device=device)], 1)
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=next_pos,
                    past_key_values=out.past_key_values, use_cache=True)
        next_pos = next_pos + 1
    return responses, response_mask


def decode(tokenizer, responses: torch.Tensor, response_mask: torch.Tensor) -> list[str]:
    """Response texts without EOS and padding."""
    eos = tokenizer.eos_token_id
    return [tokenizer.decode([t for t in row[m.bool()].tolist() if t != eos]).replace(" ", "")
            for row, m in zip(responses, response_mask)]


def rewards_of(tokenizer, problems: list[Problem], responses, response_mask) -> torch.Tensor:
    """The verifier's reward of each response, (B,). A response cut off before EOS scores 0."""
    texts = decode(tokenizer, responses, response_mask)
    finished = (responses == tokenizer.eos_token_id).any(1)
    return torch.tensor([reward(t, p.answer) if f else 0.0 for t, p, f in zip(texts, problems, finished.tolist())])


def sampled_pass(model, tokenizer, problems: list[Problem], group_size: int, prompt_len: int, response_len: int,
                 seed: int, device: str = "cpu") -> dict:
    """G samples per problem at temperature 1, as a rollout draws a group: sampled pass@1 and pass@G, and the
    samples' mean length in tokens (EOS included, as verl's response_mask counts them). The quality gate's inputs."""
    repeated = [p for p in problems for _ in range(group_size)]
    ids, mask = encode_prompts(tokenizer, repeated, prompt_len)
    resp, resp_mask = sample(model, ids.to(device), mask.to(device), response_len, tokenizer.eos_token_id,
                             tokenizer.pad_token_id, generator=torch.Generator(device).manual_seed(seed))
    scores = rewards_of(tokenizer, repeated, resp.cpu(), resp_mask.cpu()).view(-1, group_size)  # (N, G)
    return {"val_pass1": scores.mean().item(), "val_pass_g": scores.max(1).values.mean().item(),
            "sample_response_tokens": resp_mask.sum(1).float().mean().item()}


def accuracy(model, tokenizer, problems: list[Problem], prompt_len: int, response_len: int, batch: int = 256) -> float:
    """Greedy accuracy on `problems` (the held-out metric)."""
    model.eval()
    device = next(model.parameters()).device
    correct = 0.0
    for k in range(0, len(problems), batch):
        chunk = problems[k:k + batch]
        ids, mask = encode_prompts(tokenizer, chunk, prompt_len)
        resp, resp_mask = sample(model, ids.to(device), mask.to(device), response_len, tokenizer.eos_token_id,
                                 tokenizer.pad_token_id, greedy=True)
        correct += rewards_of(tokenizer, chunk, resp.cpu(), resp_mask.cpu()).sum().item()
    return correct / len(problems)


def demonstrations(task: ArithmeticTask, n: int, seed: int, flawed_fraction: float = 0.0) -> list[tuple[Problem, str]]:
    """`n` (problem, target) pairs of the train split for the cold start: the target is the solution, or with
    probability `flawed_fraction` (drawn for each demonstration) the solution with its final total off by one."""
    if not 0.0 <= flawed_fraction < 1.0:
        raise ValueError(f"flawed_fraction={flawed_fraction} must be in [0, 1): some demonstrations must be right")
    problems = task.problems(n, seed=10_000 + seed)  # train split; a stream apart from RL's (seed 100 + seed)
    rng = random.Random(20_000 + seed)
    return [(p, flawed(p, task) if rng.random() < flawed_fraction else p.solution) for p in problems]


def cold_start(model, tokenizer, task: ArithmeticTask, steps: int, batch_size: int, lr: float, seed: int,
               prompt_len: int, response_len: int, on_step: Callable[[int, float], None] | None = None,
               flawed_fraction: float = 0.0) -> None:
    """Supervised fine-tuning on demonstrations (cross-entropy on response tokens), in place.

    flawed_fraction: the share of demonstrations whose final total is answer + 1 (`arithmetic.flawed`), drawn
    afresh for every demonstration. The policy then puts about that much probability on the wrong answer on every
    problem, while sampling the right one often: RL has something to sharpen, as it has on an Instruct model."""
    device = next(model.parameters()).device
    pairs = demonstrations(task, steps * batch_size, seed, flawed_fraction)
    problems, targets = [p for p, _ in pairs], [t for _, t in pairs]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20) * (1 - s / steps))
    model.train()
    for step in range(steps):
        chunk = problems[step * batch_size:(step + 1) * batch_size]
        p_ids, p_mask = encode_prompts(tokenizer, chunk, prompt_len)
        r_ids, r_mask = encode_solutions(tokenizer, targets[step * batch_size:(step + 1) * batch_size], response_len)
        ids, mask = torch.cat([p_ids, r_ids], 1).to(device), torch.cat([p_mask, r_mask], 1).to(device)  # (B, P+R)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)).logits  # (B, P+R, V)
        # the token at P+t is predicted from position P+t-1
        pred = logits[:, prompt_len - 1:-1]  # (B, R, V)
        loss = (F.cross_entropy(pred.transpose(1, 2), r_ids.to(device), reduction="none") * r_mask.to(device)).sum()
        loss = loss / r_mask.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if on_step is not None:
            on_step(step, loss.item())
    model.eval()
