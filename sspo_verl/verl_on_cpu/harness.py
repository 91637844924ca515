"""Run verl's real FSDP2 training engine on CPU: a platform shim, a tiny Qwen2 built from a config, and a
rollout-shaped batch. Shared by benchmarks, the testbed and the integration tests.

verl 0.9.1 ships no CPU platform: `use_cpu_platform()` (cpu_platform.py) registers one. FSDP1 needs an
accelerator, so strategy is fsdp2; attention is sdpa (FlashAttention is verl's default). Nothing here is
installed into verl by importing sspo_verl: call `use_cpu_platform()` explicitly, before verl resolves its
platform.

verl internals this depends on (look here after a verl upgrade): verl.plugin.platform.PlatformBase /
PlatformRegistry, verl.workers.engine.EngineRegistry, FSDPEngineConfig / FSDPOptimizerConfig / HFModelConfig /
CheckpointConfig, verl.workers.utils.padding.left_right_2_no_padding, verl.utils.tensordict_utils and the
non-tensor keys the engine reads from the batch (see `rollout_batch`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from .cpu_platform import use_cpu_platform  # noqa: F401  (re-exported: the harness's first call)

TINY_QWEN2 = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False)


def make_tiny_model(path: str | Path, seed: int = 0, **overrides) -> Path:
    """Save a random tiny Qwen2 and a word-level tokenizer to `path` (no downloads). Returns the path."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    path = Path(path)
    cfg = {**TINY_QWEN2, **overrides}
    n = cfg["vocab_size"]
    vocab = {f"t{i}": i for i in range(n - 3)} | {"<unk>": n - 3, "<pad>": n - 2, "</s>": n - 1}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="</s>")
    hf_tok.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    hf_tok.save_pretrained(path)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(Qwen2Config(**cfg, pad_token_id=n - 2, eos_token_id=n - 1, bos_token_id=n - 1))
    model.save_pretrained(path)
    return path


def init_single_process_group(port: int | None = None, backend: str = "gloo") -> None:
    """A world of size 1 for an in-process engine (on a free loopback port unless `port` is given)."""
    import socket

    import torch.distributed as dist

    if not dist.is_initialized():
        if port is None:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(port)
        dist.init_process_group(backend=backend, rank=0, world_size=1)


def make_engine(model_path: str | Path, micro_batch_size: int = 2, lr: float = 1e-3, dtype: str = "fp32",
                lr_warmup_steps: int = -1, total_training_steps: int = -1, optimizer_overrides: dict | None = None):
    """verl's FSDP2 language-model engine on CPU, initialized.

    lr_warmup_steps > 0: verl's linear warm-up from 0, one step per `engine.lr_scheduler_step()`, which verl's
    worker calls once per rollout batch (a caller that never calls it trains at lr 0 for ever).
    optimizer_overrides: keyword arguments for the optimizer (verl's optim.override_optimizer_config)."""
    from verl.trainer.config import CheckpointConfig
    from verl.workers.config import FSDPEngineConfig, FSDPOptimizerConfig, HFModelConfig
    from verl.workers.engine import EngineRegistry

    model_config = HFModelConfig(path=str(model_path), use_remove_padding=False, enable_gradient_checkpointing=False,
                                 override_config={"attn_implementation": "sdpa"})
    model_config.model_type = "language_model"
    engine_config = FSDPEngineConfig(
        strategy="fsdp2", model_dtype=dtype, use_torch_compile=False, use_dynamic_bsz=False,
        mixed_precision={"param_dtype": dtype, "reduce_dtype": "fp32", "buffer_dtype": "fp32"},
        micro_batch_size_per_gpu=micro_batch_size, max_token_len_per_gpu=1 << 16,
    )
    engine_config.use_remove_padding = False
    optimizer_config = FSDPOptimizerConfig(lr=lr, clip_grad=1.0, lr_warmup_steps=lr_warmup_steps,
                                           total_training_steps=total_training_steps,
                                           override_optimizer_config=optimizer_overrides)
    engine = EngineRegistry.new(model_type="language_model", backend="fsdp2", model_config=model_config,
                                engine_config=engine_config, optimizer_config=optimizer_config,
                                checkpoint_config=CheckpointConfig())
    engine.initialize()
    return engine


def actor_config(loss_mode: str, mini_batch_size: int, micro_batch_size: int, **kw):
    """verl's FSDPActorConfig for `ppo_loss` (the paper's aggregation unless overridden)."""
    from verl.workers.config import FSDPActorConfig, PolicyLossConfig

    kw.setdefault("loss_agg_mode", "seq-mean-token-mean")
    return FSDPActorConfig(strategy="fsdp2", rollout_n=1, ppo_mini_batch_size=mini_batch_size,
                           ppo_micro_batch_size_per_gpu=micro_batch_size, use_torch_compile=False,
                           policy_loss=PolicyLossConfig(loss_mode=loss_mode), **kw)


def rollout_batch(batch_size: int, prompt_len: int, response_len: int, vocab_size: int, seed: int = 0,
                  micro_batch_size: int = 2, old_log_probs: torch.Tensor | None = None):
    """A random rollout-shaped batch (left-padded prompts, right-padded responses of random lengths).

    old_log_probs (B, response_len): pi_old of the responses; random when None (see `policy_log_probs`)."""
    g = torch.Generator().manual_seed(seed)
    B, P, R = batch_size, prompt_len, response_len
    attn = torch.ones(B, P + R, dtype=torch.long)
    prompt_pad = torch.randint(0, P // 2, (B,), generator=g)
    response_len_i = torch.randint(R // 2, R + 1, (B,), generator=g)
    for i in range(B):
        attn[i, : prompt_pad[i]] = 0  # left-padded prompt
        attn[i, P + response_len_i[i]:] = 0  # right-padded response
    prompts = torch.randint(0, vocab_size - 3, (B, P), generator=g)  # (B, P)
    responses = torch.randint(0, vocab_size - 3, (B, R), generator=g)  # (B, R)
    old = -torch.rand(B, R, generator=g) * 3 - 4 if old_log_probs is None else old_log_probs
    advantages = torch.randn(B, 1, generator=g).expand(B, R)  # (B, R) one advantage per sequence
    return make_batch(prompts, responses, attn, old, advantages, micro_batch_size)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens (left padding gets 0), as verl and the rollout sampler use them."""
    return torch.clamp(torch.cumsum(attention_mask, 1) - 1, min=0)


def make_batch(prompts: torch.Tensor, responses: torch.Tensor, attention_mask: torch.Tensor,
               old_log_probs: torch.Tensor, advantages: torch.Tensor, micro_batch_size: int,
               calculate_entropy: bool = False):
    """verl's actor batch in its no-padding layout, as the trainer hands it to the engine.

    prompts (B, P) left-padded; responses (B, R) right-padded; attention_mask (B, P+R);
    old_log_probs and advantages (B, R)."""
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import left_right_2_no_padding

    B, P = prompts.shape
    attn = attention_mask.long()
    td = TensorDict({
        "prompts": prompts, "responses": responses, "input_ids": torch.cat([prompts, responses], 1),
        "attention_mask": attn, "position_ids": position_ids(attn),
        "response_mask": attn[:, P:].clone(), "old_log_probs": old_log_probs,
        "advantages": advantages.contiguous(),
    }, batch_size=[B])
    td = left_right_2_no_padding(td)
    tu.assign_non_tensor(td, calculate_entropy=calculate_entropy, global_batch_size=B, temperature=1.0,
                         use_remove_padding=False, use_dynamic_bsz=False, micro_batch_size_per_gpu=micro_batch_size,
                         max_token_len_per_gpu=1 << 16, use_fused_kernels=False, global_token_num=None)
    return td


def policy_log_probs(engine, td, with_entropy: bool = False):
    """log pi(response tokens) under the engine's current weights, (B, response_len), zero at padding.

    with_entropy: also return the policy's entropy at each response token, (B, response_len)."""
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import no_padding_2_padding

    tu.assign_non_tensor(td, calculate_entropy=with_entropy)
    with engine.eval_mode():
        out = engine.infer_batch(td)
    log_probs = no_padding_2_padding(out["model_output"]["log_probs"], td).detach()
    if not with_entropy:
        return log_probs
    return log_probs, no_padding_2_padding(out["model_output"]["entropy"], td).detach()


def train_step(engine, td, actor_cfg, on_loss_time=None, extra_metrics=None) -> dict:
    """One verl `train_batch` (forward, backward, optimizer step) with verl's ppo_loss.

    on_loss_time(seconds) is called after each micro-batch's ppo_loss, when given.
    extra_metrics(model_output, data) -> {name: float} adds metrics of each micro-batch to ppo_loss's own."""
    from verl.workers.utils.losses import ppo_loss

    def loss_fn(model_output, data, dp_group=None):
        t0 = time.perf_counter()
        loss, metrics = ppo_loss(actor_cfg, model_output, data, dp_group)
        if on_loss_time is not None:
            on_loss_time(time.perf_counter() - t0)
        if extra_metrics is not None:
            metrics.update(extra_metrics(model_output, data))
        return loss, metrics

    with engine.train_mode():
        return engine.train_batch(td, loss_function=loss_fn)
