"""A transformers rollout backend for verl 0.9.1, so `main_ppo` runs on a machine with no GPU and no vLLM.

Test and testbed support, like `cpu_platform.py`: nothing registers it unless this module is imported, and the
CPU recipe (recipes/cpu_tiny.sh) is what imports it. Selected with

    actor_rollout_ref.rollout.name=hf

Three parts, in the places verl's hybrid engine expects them (the vLLM backend's shape, without its HTTP server):

    HFRolloutServer   a Ray actor per replica node: holds a transformers copy of the policy and answers the agent
                      loop's `generate(prompt_ids, sampling_params, request_id)` with a `TokenOutput`. Requests that
                      arrive together are sampled together (left-padded, one KV cache), each with its own
                      temperature, top_p, top_k and max_tokens, stopping at EOS.
    HFReplica         verl's `RolloutReplica`: launches the server next to the trainer rank(s) of its replica
                      (registered with `RolloutReplicaRegistry.register("hf", ...)`).
    HFServerAdapter   verl's `BaseRollout` inside the actor worker (registered in `_ROLLOUT_REGISTRY` under
                      ("hf", "async")): `update_weights` streams the actor's weights to the server after every
                      training step, as the hybrid engine does for vLLM; `resume` / `release` (wake / sleep) have
                      nothing to free on a CPU and are no-ops.

Standalone on purpose: it imports torch, transformers, ray and verl, never the sspo_verl package, so verl's
processes load it as a top-level module (PYTHONPATH=<this folder>, VERL_USE_EXTERNAL_MODULES=cpu_platform,
cpu_rollout) while the loss modes still reach them only through the plugin's entry point.

verl internals this depends on (check them after a verl upgrade): RolloutReplica and its fields (config,
model_config, workers, world_size, nnodes, gpus_per_replica_node, servers, _server_handle, _server_address),
RolloutReplicaRegistry, TokenOutput, RolloutMode, BaseRollout, verl.workers.rollout.base._ROLLOUT_REGISTRY,
the server methods the agent loop, the load balancer and CheckpointEngineManager call (generate, wake_up, sleep,
clear_kv_cache, release_kv_cache, resume_kv_cache, abort_all_requests, resume_generation, abort_request,
set_global_steps, wait_for_requests_to_drain, start_profile, stop_profile), and the worker's naive weight sync
(ActorRolloutRefWorker.update_weights -> rollout.update_weights(weights, global_steps=...)).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import ray
import torch
import torch.nn.functional as F

from verl.utils.config import omega_conf_to_dataclass
from verl.workers.config import HFModelConfig
from verl.workers.rollout import base as rollout_base
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutMode, RolloutReplica, RolloutReplicaRegistry, TokenOutput

logger = logging.getLogger(__name__)

NAME = "hf"  # actor_rollout_ref.rollout.name
BATCH_WAIT_S = 0.005  # let the requests the agent loop sends together arrive before a batch starts


# ---------------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------------


@dataclass
class Request:
    """One `generate` call: a prompt and what to sample for it."""

    prompt_ids: list[int]
    max_tokens: int
    temperature: float  # 0: greedy
    top_p: float
    top_k: int  # <= 0: no top-k
    ignore_eos: bool
    want_log_probs: bool
    future: asyncio.Future = field(default=None, repr=False)


def sampling_request(params: dict[str, Any], prompt_ids: list[int], prompt_length: int, response_length: int,
                     max_model_len: int) -> Request:
    """A `Request` from the agent loop's sampling params, read as vLLM's server reads them.

    max_tokens: `max_tokens` or `max_new_tokens` when given, else what the prompt leaves of
    prompt_length + response_length, capped at response_length; never past the context (max_model_len)."""
    params = dict(params)
    room = max_model_len - len(prompt_ids)
    if room < 1:
        raise ValueError(f"prompt of {len(prompt_ids)} tokens leaves no room to generate within max_model_len="
                         f"{max_model_len}; raise actor_rollout_ref.rollout.max_model_len or shorten the prompt")
    if "max_tokens" in params:
        max_tokens = params.pop("max_tokens")
    elif "max_new_tokens" in params:
        max_tokens = params.pop("max_new_tokens")
    else:
        max_tokens = min(response_length, prompt_length + response_length - len(prompt_ids))
    temperature = float(params.pop("temperature", 1.0))
    top_p = float(params.pop("top_p", 1.0))
    top_k = int(params.pop("top_k", -1) or -1)
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"sampling params out of range: temperature={temperature} (>= 0), top_p={top_p} (0 < top_p <= 1)")
    repetition_penalty = float(params.pop("repetition_penalty", 1.0))
    if repetition_penalty != 1.0:
        raise ValueError(f"the hf rollout does not implement repetition_penalty={repetition_penalty}; use 1.0")
    request = Request(prompt_ids=[int(t) for t in prompt_ids], max_tokens=max(1, min(int(max_tokens), room)),
                      temperature=temperature, top_p=top_p, top_k=top_k, ignore_eos=bool(params.pop("ignore_eos", False)),
                      want_log_probs=bool(params.pop("logprobs", False)))
    if params:
        raise ValueError(f"the hf rollout does not implement the sampling params {sorted(params)}; it serves "
                         f"temperature, top_p, top_k, max_tokens, ignore_eos, logprobs and repetition_penalty=1")
    return request


def _filter_top_k_top_p(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Logits with tokens outside each row's top-k and nucleus set to -inf.  logits (B, V); top_k, top_p (B,)."""
    V = logits.shape[-1]
    sorted_logits, order = logits.sort(-1, descending=True)  # (B, V)
    rank = torch.arange(V, device=logits.device).expand_as(sorted_logits)  # (B, V)
    k = torch.where(top_k > 0, top_k.clamp(max=V), torch.full_like(top_k, V))  # (B,)
    drop = rank >= k[:, None]
    probs = F.softmax(sorted_logits.masked_fill(drop, float("-inf")), -1)
    # keep the smallest prefix whose mass reaches top_p: a token goes when the mass before it already does
    mass_before = probs.cumsum(-1) - probs
    drop |= mass_before >= top_p[:, None]
    drop[:, 0] = False  # the most likely token always stays
    return logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))


LOGPROBS_MODES = ("processed_logprobs", "raw_logprobs")  # of vLLM's (rollout.logprobs_mode), the two we serve


@torch.no_grad()
def sample(model, requests: list[Request], pad_id: int, eos_ids: set[int],
           generator: Optional[torch.Generator] = None,
           logprobs_mode: str = "processed_logprobs") -> list[tuple[list[int], list[float]]]:
    """Sample every request together: (response token ids, their log-probs) per request.

    Prompts are left-padded with position ids counted over real tokens, as verl's actor lays them out, so the
    actor recomputes the same log-probs. A row stops after EOS (included, as vLLM returns it) or max_tokens.
    Log-probs as vLLM reports them: `processed_logprobs` under the distribution sampled from (logits / temperature,
    then top-k and top-p; with neither, what verl's actor computes for old_log_prob), `raw_logprobs` under
    softmax(logits). Greedy rows (temperature 0) use the raw logits for both."""
    if logprobs_mode not in LOGPROBS_MODES:
        raise ValueError(f"the hf rollout serves rollout.logprobs_mode in {LOGPROBS_MODES}, got {logprobs_mode!r}")
    device = next(model.parameters()).device
    B = len(requests)
    P = max(len(r.prompt_ids) for r in requests)
    ids = torch.full((B, P), pad_id, dtype=torch.long)
    mask = torch.zeros(B, P, dtype=torch.long)
    for i, r in enumerate(requests):
        ids[i, P - len(r.prompt_ids):] = torch.tensor(r.prompt_ids)
        mask[i, P - len(r.prompt_ids):] = 1
    ids, mask = ids.to(device), mask.to(device)
    temperature = torch.tensor([r.temperature for r in requests], device=device)  # (B,)
    greedy = temperature == 0
    scale = torch.where(greedy, torch.ones_like(temperature), temperature)[:, None]  # (B, 1)
    top_k = torch.tensor([r.top_k for r in requests], device=device)
    top_p = torch.tensor([r.top_p for r in requests], device=device)
    max_tokens = torch.tensor([r.max_tokens for r in requests], device=device)
    stops = torch.tensor(sorted(eos_ids), device=device)
    ignore_eos = torch.tensor([r.ignore_eos for r in requests], device=device)

    from transformers import DynamicCache

    positions = torch.clamp(mask.cumsum(1) - 1, min=0)  # (B, P)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=DynamicCache(),
                use_cache=True)
    next_pos = mask.sum(1, keepdim=True)  # (B, 1)
    tokens, log_probs = [], []  # per step: (B,)
    alive = torch.ones(B, dtype=torch.bool, device=device)
    for t in range(int(max_tokens.max())):
        raw = out.logits[:, -1].float()  # (B, V)
        filtered = _filter_top_k_top_p(raw / scale, top_k, top_p)  # (B, V) the distribution sampled from
        drawn = torch.multinomial(F.softmax(filtered, -1), 1, generator=generator).squeeze(1)  # (B,)
        token = torch.where(greedy, raw.argmax(-1), drawn)  # (B,)
        reported = raw if logprobs_mode == "raw_logprobs" else torch.where(greedy[:, None], raw, filtered)
        log_p = F.log_softmax(reported, -1)  # (B, V)
        tokens.append(torch.where(alive, token, torch.full_like(token, pad_id)))
        log_probs.append(log_p.gather(1, token[:, None]).squeeze(1))
        finished = (torch.isin(token, stops) & ~ignore_eos) | (t + 1 >= max_tokens)
        alive = alive & ~finished
        if not alive.any():
            break
        mask = torch.cat([mask, torch.ones(B, 1, dtype=mask.dtype, device=device)], 1)
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=next_pos,
                    past_key_values=out.past_key_values, use_cache=True)
        next_pos = next_pos + 1
    tokens_t, log_probs_t = torch.stack(tokens, 1).cpu(), torch.stack(log_probs, 1).cpu()  # (B, T)
    results = []
    for i, r in enumerate(requests):
        row = tokens_t[i].tolist()
        n = len(row)
        for j, tok in enumerate(row):  # the response ends at its first stop token or at max_tokens
            if (tok in eos_ids and not r.ignore_eos) or j + 1 >= r.max_tokens:
                n = j + 1
                break
        results.append((row[:n], log_probs_t[i, :n].tolist()))
    return results


# ---------------------------------------------------------------------------------------------------
# The server (a Ray actor per replica node)
# ---------------------------------------------------------------------------------------------------


class HFRolloutServer:
    """Token-in, token-out generation with a transformers model, batched over concurrent requests."""

    def __init__(self, config, model_config, rollout_mode: RolloutMode, replica_rank: int, node_rank: int):
        self.config = omega_conf_to_dataclass(config)  # RolloutConfig
        self.model_config: HFModelConfig = omega_conf_to_dataclass(model_config, dataclass_type=HFModelConfig)
        self.rollout_mode, self.replica_rank, self.node_rank = rollout_mode, replica_rank, node_rank
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(max(1, int(os.environ.get("SSPO_HF_ROLLOUT_THREADS", "1"))))
        self.model = AutoModelForCausalLM.from_pretrained(self.model_config.local_path, dtype=torch.float32,
                                                          attn_implementation="sdpa").eval()
        tokenizer = self.model_config.tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = {int(e) for e in ([eos] if isinstance(eos, int) else list(eos or []))}
        if tokenizer.eos_token_id is not None:
            self.eos_ids.add(int(tokenizer.eos_token_id))
        if not self.eos_ids:
            raise ValueError(f"{self.model_config.local_path}: neither generation_config nor the tokenizer names an "
                             f"EOS token, so generation could only stop at max_tokens; set eos_token_id")
        if self.config.logprobs_mode not in LOGPROBS_MODES:
            raise ValueError(f"actor_rollout_ref.rollout.logprobs_mode={self.config.logprobs_mode!r}: the hf rollout "
                             f"serves {LOGPROBS_MODES}")
        self.generator = torch.Generator().manual_seed(self.config.seed + replica_rank)
        self.max_model_len = self.config.max_model_len or (self.config.prompt_length + self.config.response_length)
        self.max_batch = max(1, self.config.max_num_seqs)
        self.global_steps = None
        self.weights_version = 0  # updates received, for tests and logs
        self._pending: list[Request] = []
        self._batcher: Optional[asyncio.Task] = None
        self._model_lock = asyncio.Lock()  # generation and weight updates never overlap
        self._in_flight = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self.stats = {"requests": 0, "batches": 0, "generate_s": 0.0}

    # --- generation -------------------------------------------------------------------------------

    async def generate(self, prompt_ids: list[int], sampling_params: dict[str, Any], request_id: str,
                       image_data=None, video_data=None, audio_data=None, mm_processor_kwargs=None,
                       priority: int = 0, **kwargs) -> TokenOutput:
        if image_data is not None or video_data is not None or audio_data is not None:
            raise ValueError("the hf rollout serves text only; multimodal data needs vllm or sglang")
        request = sampling_request(sampling_params, prompt_ids, self.config.prompt_length,
                                   self.config.response_length, self.max_model_len)
        request.future = asyncio.get_running_loop().create_future()
        self._pending.append(request)
        self._in_flight += 1
        self._drained.clear()
        if self._batcher is None or self._batcher.done():
            self._batcher = asyncio.create_task(self._run_batches())
        try:
            token_ids, log_probs = await request.future
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._drained.set()
        return TokenOutput(token_ids=token_ids, log_probs=log_probs if request.want_log_probs else None,
                           stop_reason="completed", extra_fields={"global_steps": self.global_steps})

    async def _run_batches(self) -> None:
        while self._pending:
            await asyncio.sleep(BATCH_WAIT_S)
            batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
            try:
                async with self._model_lock:
                    t0 = time.perf_counter()
                    # in a thread, so requests keep arriving (and queue for the next batch) while this one runs
                    results = await asyncio.to_thread(sample, self.model, batch, self.pad_id, self.eos_ids,
                                                      self.generator, self.config.logprobs_mode)
                    self.stats["generate_s"] += time.perf_counter() - t0
            except Exception as exc:  # every waiting request gets the error, none hangs
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(exc)
                continue
            self.stats["requests"] += len(batch)
            self.stats["batches"] += 1
            for r, result in zip(batch, results):
                if not r.future.done():
                    r.future.set_result(result)

    # --- weights ----------------------------------------------------------------------------------

    async def update_weights(self, state: dict[str, torch.Tensor], global_steps: Optional[int] = None) -> int:
        """Load the actor's weights (HF names, full tensors). Every model weight must be sent: a partial update
        would sample from a mix of old and new weights, so it is an error."""
        async with self._model_lock:
            own = self.model.state_dict()
            missing = sorted(set(own) - set(state))
            unexpected = sorted(set(state) - set(own))
            if missing or unexpected:
                raise ValueError(f"hf rollout weight update does not match the model: missing {missing[:5]}, "
                                 f"unexpected {unexpected[:5]} (the actor and the rollout must load the same "
                                 f"model: actor_rollout_ref.model.path)")
            self.model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
            self.weights_version += 1
            if global_steps is not None:
                self.global_steps = global_steps
            return self.weights_version

    def get_stats(self) -> dict:
        return {**self.stats, "weights_version": self.weights_version, "global_steps": self.global_steps}

    async def fingerprint(self) -> float:
        """A number that changes when any weight changes (sum of |w|), for tests."""
        async with self._model_lock:
            return float(sum(p.detach().abs().sum() for p in self.model.parameters()))

    # --- what the replica, the load balancer and the checkpoint manager call --------------------------
    # Sleep and wake free GPU memory for vLLM; a CPU model has nothing to free, so they keep it in place.

    async def wake_up(self, tags: Optional[list[str]] = None):
        return None

    async def sleep(self):
        return None

    async def clear_kv_cache(self):
        return None  # no cache outlives a batch

    async def release_kv_cache(self):
        return None

    async def resume_kv_cache(self):
        return None

    async def set_global_steps(self, global_steps: int):
        self.global_steps = global_steps

    async def wait_for_requests_to_drain(self):
        await self._drained.wait()

    async def abort_all_requests(self, reset_prefix_cache: bool = True, reject_request: bool = False) -> dict:
        # Batches are short and not preemptible: let them finish (partial rollout is not supported here).
        await self._drained.wait()
        return {"aborted_count": 0, "request_ids": []}

    async def resume_generation(self):
        return None

    async def abort_request(self, request_id: str, reset_prefix_cache: bool = True) -> dict:
        return {"aborted": False, "request_id": request_id, "error": "the hf rollout does not abort requests"}

    async def start_profile(self, **kwargs):
        return None

    async def stop_profile(self):
        return None


# ---------------------------------------------------------------------------------------------------
# The replica (driver side) and the adapter (inside the actor worker)
# ---------------------------------------------------------------------------------------------------


def server_name(replica_rank: int, node_rank: int) -> str:
    return f"{NAME}_server_{replica_rank}_{node_rank}"


class HFReplica(RolloutReplica):
    """One HFRolloutServer per node of the replica, on the node of its trainer ranks (hybrid mode)."""

    async def launch_servers(self):
        if self.rollout_mode != RolloutMode.HYBRID:
            raise NotImplementedError(f"the hf rollout runs colocated with the actor (hybrid engine) only; got "
                                      f"{self.rollout_mode}: keep actor_rollout_ref.hybrid_engine=True")
        if self.is_reward_model or self.is_teacher_model:
            raise NotImplementedError("the hf rollout serves the policy only, not reward or teacher models")
        node_ids = await asyncio.gather(*[w.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id())
                                          for w in self.workers])
        server_cls = ray.remote(HFRolloutServer)
        for node_rank in range(self.nnodes):
            name = server_name(self.replica_rank, node_rank) + self.name_suffix
            server = server_cls.options(
                scheduling_strategy=ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
                    node_id=node_ids[node_rank * self.gpus_per_replica_node], soft=False),
                name=name, max_concurrency=self.max_concurrency, num_cpus=0,
            ).remote(config=self.config, model_config=self.model_config, rollout_mode=self.rollout_mode,
                     replica_rank=self.replica_rank, node_rank=node_rank)
            self.servers.append(server)
        await asyncio.gather(*[s.get_stats.remote() for s in self.servers])  # constructed (raises if not)
        self._server_handle = self.servers[0]
        self._server_address = f"{NAME}://{server_name(self.replica_rank, 0)}{self.name_suffix}"  # a key, not a URL

    def rollout_worker_use_gpu(self) -> bool:
        return False


class HFServerAdapter(BaseRollout):
    """The actor worker's handle on its replica's server: weight sync after each step; sleep and wake are no-ops."""

    def __init__(self, config, model_config, device_mesh, replica_rank: int = -1):
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", "0"))
        local_world_size = int(os.environ.get("RAY_LOCAL_WORLD_SIZE", "1"))
        rollout_world_size = (self.config.tensor_model_parallel_size * self.config.data_parallel_size
                              * self.config.pipeline_model_parallel_size)
        self.replica_rank = rank // rollout_world_size if replica_rank == -1 else replica_rank
        self.rollout_rank = rank % rollout_world_size
        self.node_rank = self.rollout_rank // local_world_size
        self._has_server = self.rollout_rank % local_world_size == 0  # one rank per node sends the weights
        self._server = None

    def _server_handle(self):
        if self._server is None:
            self._server = ray.get_actor(server_name(self.replica_rank, self.node_rank))
        return self._server

    async def update_weights(self, weights, global_steps: Optional[int] = None, wire_format: str = "named_tensors",
                             **kwargs):
        if wire_format != "named_tensors":
            raise ValueError(f"the hf rollout takes full weights (wire_format='named_tensors'), got {wire_format!r}: "
                             f"use actor_rollout_ref.rollout.checkpoint_engine.backend=naive")
        if kwargs.get("peft_config") is not None:
            raise NotImplementedError("the hf rollout does not take LoRA adapters; set model.lora.merge=True")
        # Every rank walks the generator: gathering a sharded weight is a collective.
        state = {name: tensor.detach().to("cpu", copy=True) for name, tensor in weights}
        if self._has_server:
            await self._server_handle().update_weights.remote(state, global_steps)

    async def resume(self, tags: list[str]):
        return None

    async def release(self):
        return None


def register() -> None:
    """Make `actor_rollout_ref.rollout.name=hf` resolve to this backend in this process (idempotent)."""
    RolloutReplicaRegistry.register(NAME, lambda: HFReplica)
    rollout_base._ROLLOUT_REGISTRY[(NAME, "async")] = f"{__name__}.HFServerAdapter"


register()
