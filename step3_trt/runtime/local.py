"""In-process engine runner (no MPI): the attention engine and every FFN engine in one process,
driven by the engine core (runtime/core.py) with a paged KV cache and the continuous-batching
scheduler. Attention ranks are data-parallel replicas, so one of them serves the whole batch."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from pathlib import Path

import torch

from step3_trt.build_config import BuildConfig
from step3_trt.config import Step3Config
from step3_trt.convert.memory_plan import memory_plan
from step3_trt.generation_config import GenerationConfig
from step3_trt.manifest import ENGINES, read_manifest
from step3_trt.runtime.batch import make_batch
from step3_trt.runtime.block_manager import BlockHasher, BlockManager
from step3_trt.runtime.core import EngineCore
from step3_trt.runtime.cuda_graphs import GraphCache
from step3_trt.runtime.engine import RankEngine
from step3_trt.runtime.executors import AttentionExecutor, FfnExecutor
from step3_trt.runtime.ffn import LocalFfn
from step3_trt.runtime.ranks import RankId, Role
from step3_trt.runtime.request import Request
from step3_trt.runtime.scheduler import Scheduler, SchedulerConfig
from step3_trt.sampling import SamplingParams
from step3_trt.tokenizer import Step3Tokenizer, load_tokenizer


def kv_blocks(cfg: Step3Config, build: BuildConfig) -> int:
    """Blocks of the attention ranks' KV cache, from the build config's memory plan."""
    capacity = next(r for r in memory_plan(cfg, build) if r.rank.startswith("attention"))
    return capacity.kv_capacity_tokens // build.kv_cache.block_size


def max_seq_len(cfg: Step3Config, build: BuildConfig) -> int:
    """Prompt + output tokens a sequence may reach."""
    return build.runtime.max_seq_len or cfg.max_position_embedding


def eos_token_ids(engine_dir: Path, cfg: Step3Config) -> tuple[int, ...]:
    """The ids that end a sequence: every EOS id of the release's files and the chat template's
    end of turn (step3_trt/generation_config.py), read from the engines' tokenizer files."""
    return GenerationConfig.from_dir(engine_dir, cfg).eos_token_ids


def prefix_hasher(build: BuildConfig, prefix_caching: bool | None = None) -> BlockHasher | None:
    """How an attention rank names its full KV blocks for prefix caching, or None when it is
    off (`prefix_caching`: None = the build config's `kv_cache.prefix_caching`). The seed is the
    build digest: engines built otherwise compute other K/V for the same tokens."""
    on = build.kv_cache.prefix_caching if prefix_caching is None else prefix_caching
    return BlockHasher(build.kv_cache.block_size, build.digest().encode()) if on else None


def make_scheduler(cfg: Step3Config, build: BuildConfig, num_blocks: int,
                   eos: Collection[int], tokenizer: Step3Tokenizer | None,
                   prefix_caching: bool | None = None) -> Scheduler:
    """The scheduler an attention rank runs, sized by the build config (`prefix_caching`: None
    = the build config's)."""
    return Scheduler(
        BlockManager(num_blocks, build.kv_cache.block_size, prefix_hasher(build, prefix_caching)),
        SchedulerConfig(build.runtime.max_batch, build.runtime.max_tokens_per_step),
        max_seq_len(cfg, build), eos,
        detokenize=tokenizer.decode if tokenizer else None)


def attention_executor(engine_dir: Path, build: BuildConfig, engine: RankEngine,
                       runtime=None) -> AttentionExecutor:
    """An attention rank's executor: KV cache sized by the memory plan, CUDA graphs as the
    build config's runtime settings (or `runtime`) say."""
    cfg = Step3Config.from_dict(engine.arch)
    return AttentionExecutor(engine, kv_blocks(cfg, build), max_seq_len(cfg, build),
                             GraphCache.for_engine(runtime or build.runtime, engine))


class LocalRunner:
    def __init__(self, engine_dir: str | Path, device: str | None = None,
                 cuda_graphs: bool | None = None, prefix_caching: bool | None = None):
        """`cuda_graphs`: None = the build config's `runtime.cuda_graphs` (CUDA engines only);
        `prefix_caching`: None = the build config's `kv_cache.prefix_caching`."""
        self.dir = Path(engine_dir)
        self.prefix_caching = prefix_caching
        manifest = read_manifest(self.dir, ENGINES)
        self.build = BuildConfig.from_file(self.dir / "build_config.yaml")
        device = device or self.build.device
        digest = self.build.digest()
        runtime = self.build.runtime
        if cuda_graphs is not None:
            runtime = dataclasses.replace(runtime, cuda_graphs=cuda_graphs)
        attention = RankEngine(self.dir / "attention" / "rank0", device, digest)
        self.config = Step3Config.from_dict(attention.arch)
        self.attention = attention_executor(self.dir, self.build, attention, runtime)
        self.num_blocks = self.attention.k_cache.shape[1]
        self.ffn = []
        for name in manifest["ranks"]:
            if RankId.parse(name).role is Role.FFN:
                engine = RankEngine(self.dir / name, device, digest)
                self.ffn.append(FfnExecutor(engine, GraphCache.for_engine(runtime, engine)))
        self.device = attention.device
        self.tokenizer = load_tokenizer(self.dir)
        self.eos_token_ids = eos_token_ids(self.dir, self.config)

    def core(self, eos: Collection[int] | None = None) -> EngineCore:
        """A fresh engine core over this runner's engines (its own scheduler and an empty prefix
        cache; the KV cache tensors are shared, so use one core at a time)."""
        eos = self.eos_token_ids if eos is None else tuple(eos)
        scheduler = make_scheduler(self.config, self.build, self.num_blocks, eos, self.tokenizer,
                                   self.prefix_caching)
        return EngineCore(self.attention, LocalFfn(self.ffn), scheduler, eos)

    def run(self, requests: list[Request], eos: Collection[int] | None = None) -> list[Request]:
        """Serve `requests` to completion (all admitted at once; continuous batching decides
        the steps); returns them, finished. A request that cannot be admitted raises."""
        core = self.core(eos)
        for r in requests:
            core.add(r)
        while core.has_work():
            core.step()
        return requests

    def generate(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams],
                 eos_token_ids: Collection[int] | None = None) -> list[list[int]]:
        """Output ids of each prompt. `eos_token_ids`: None = the engines' own."""
        per_seq = params if isinstance(params, list) else [params] * len(prompts)
        requests = [Request(i, list(p), sp) for i, (p, sp) in enumerate(zip(prompts, per_seq))]
        return [r.output for r in self.run(requests, eos_token_ids)]

    @torch.no_grad()
    def forward(self, batch, every_token: bool = False) -> torch.Tensor:
        """One engine pass over `batch` (no sampling): logits [S, V] at each sequence's last new
        token, or with `every_token` logits [T, V] at every new token (flat token order)."""
        x = self.core().forward([batch])[0]
        return self.attention.token_logits(x) if every_token else self.attention.logits(x, batch)

    def prompt_logits(self, prompts: list[list[int]]) -> list[torch.Tensor]:
        """Logits [len(p), V] float32 at every position of each prompt (row t scores token
        t + 1), by chunked prefill through the paged cache, as generation computes them;
        nothing is generated and the cache is freed afterwards."""
        vocab = self.config.vocab_size
        if any(not 0 <= t < vocab for p in prompts for t in p):
            raise ValueError(f"prompt token ids must be in [0, {vocab})")
        # every position's logits are wanted, so no prefix may come from the cache
        scheduler = make_scheduler(self.config, self.build, self.num_blocks, (), None,
                                   prefix_caching=False)
        if any(len(p) >= scheduler.max_seq_len for p in prompts):
            raise ValueError(f"prompts to score must be shorter than the engines' maximum "
                             f"sequence length {scheduler.max_seq_len}")
        one = SamplingParams(max_new_tokens=1, greedy=True)
        for i, p in enumerate(prompts):
            scheduler.add(Request(i, list(p), one))
        out = [torch.empty(len(p), vocab, dtype=torch.float32) for p in prompts]
        while scheduler.has_work():
            chunks = scheduler.schedule()
            if not chunks:
                raise RuntimeError("the scheduler could not place any request (KV cache too small)")
            tables = [scheduler.blocks.block_table(c.request.request_id) for c in chunks]
            logits = self.forward(make_batch(chunks, tables, self.device), every_token=True)
            rows = logits.cpu().split([len(c.tokens) for c in chunks])
            for c, r in zip(chunks, rows):
                out[c.request.request_id][c.start:c.start + len(c.tokens)] = r
            scheduler.finish_step([c for c in chunks if not c.samples], {})
            for c in chunks:
                if c.samples:
                    scheduler.finish(c.request, "length")
        return out
