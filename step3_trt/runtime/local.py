"""In-process engine runner (no MPI): the attention engine and every FFN engine in one process,
layer by layer, with a paged KV cache and the continuous-batching scheduler.

Attention ranks are data-parallel replicas, so one of them serves the whole batch here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from step3_trt.build_config import BuildConfig
from step3_trt.config import Step3Config
from step3_trt.convert.memory_plan import memory_plan
from step3_trt.manifest import ENGINES, read_manifest
from step3_trt.runtime.batch import StepBatch, make_batch
from step3_trt.runtime.block_manager import BlockManager
from step3_trt.runtime.cuda_graphs import GraphCache
from step3_trt.runtime.engine import RankEngine
from step3_trt.runtime.executors import AttentionExecutor, FfnExecutor
from step3_trt.runtime.scheduler import Chunk, Request, Scheduler, SchedulerConfig
from step3_trt.sampling import SamplingParams, sample
from step3_trt.tokenizer import Step3Tokenizer, load_tokenizer


def kv_blocks(cfg: Step3Config, build: BuildConfig) -> int:
    """Blocks of the attention ranks' KV cache, from the build config's memory plan."""
    capacity = next(r for r in memory_plan(cfg, build) if r.rank.startswith("attention"))
    return capacity.kv_capacity_tokens // build.kv_cache.block_size


def max_seq_len(cfg: Step3Config, build: BuildConfig) -> int:
    """Prompt + output tokens a sequence may reach."""
    return build.runtime.max_seq_len or cfg.max_position_embedding


def make_scheduler(cfg: Step3Config, build: BuildConfig, num_blocks: int,
                   eos_token_id: int | None, tokenizer: Step3Tokenizer | None) -> Scheduler:
    """The scheduler an attention rank runs, sized by the build config."""
    return Scheduler(
        BlockManager(num_blocks, build.kv_cache.block_size),
        SchedulerConfig(build.runtime.max_batch, build.runtime.max_tokens_per_step),
        max_seq_len(cfg, build), eos_token_id,
        detokenize=tokenizer.decode if tokenizer else None)


def sample_chunks(chunks: list[Chunk], logits: torch.Tensor,
                  generators: dict[int, torch.Generator | None]) -> dict[int, int]:
    """Next token of every chunk that ends at its request's last token (logits row i: chunk i)."""
    return {c.request.request_id: sample(logits[i], c.request.params,
                                         generators[c.request.request_id])
            for i, c in enumerate(chunks) if c.samples}


class LocalRunner:
    def __init__(self, engine_dir: str | Path, device: str | None = None,
                 cuda_graphs: bool | None = None):
        """`cuda_graphs`: None = the build config's `runtime.cuda_graphs` (CUDA engines only)."""
        self.dir = Path(engine_dir)
        manifest = read_manifest(self.dir, ENGINES)
        self.build = BuildConfig.from_file(self.dir / "build_config.yaml")
        device = device or self.build.device
        digest = self.build.digest()
        attention = RankEngine(self.dir / "attention" / "rank0", device, digest)
        self.config = Step3Config.from_dict(attention.arch)
        self.num_blocks = kv_blocks(self.config, self.build)
        runtime = self.build.runtime
        if cuda_graphs is not None:
            runtime = dataclasses.replace(runtime, cuda_graphs=cuda_graphs)
        self.attention = AttentionExecutor(attention, self.num_blocks,
                                           max_seq_len(self.config, self.build),
                                           GraphCache.for_engine(runtime, attention))
        self.ffn = []
        for name in manifest["ranks"]:
            if name.startswith("ffn/"):
                engine = RankEngine(self.dir / name, device, digest)
                self.ffn.append(FfnExecutor(engine, GraphCache.for_engine(runtime, engine)))
        self.device = attention.device
        self.tokenizer = load_tokenizer(self.dir)

    @torch.no_grad()
    def forward(self, batch: StepBatch, every_token: bool = False) -> torch.Tensor:
        """One engine step: logits [S, V] at each sequence's last new token, or with
        `every_token` logits [T, V] at every new token (the batch's flat token order)."""
        x = self.attention.embed(batch)
        for layer in range(self.config.num_hidden_layers):
            h, y, route = self.attention.attention(layer, x, batch)
            x = self.attention.combine(h, [f.partial(layer, y, route) for f in self.ffn])
        return self.attention.token_logits(x) if every_token else self.attention.logits(x, batch)

    def step(self, scheduler: Scheduler, chunks: list[Chunk]) -> torch.Tensor:
        tables = [scheduler.blocks.block_table(c.request.request_id) for c in chunks]
        return self.forward(self.attention.batch(chunks, tables))

    def prompt_logits(self, prompts: list[list[int]]) -> list[torch.Tensor]:
        """Logits [len(p), V] float32 at every position of each prompt (row t scores token
        t + 1), by chunked prefill through the paged cache, as `generate` computes them;
        nothing is generated and the cache is freed afterwards."""
        vocab = self.config.vocab_size
        if any(not 0 <= t < vocab for p in prompts for t in p):
            raise ValueError(f"prompt token ids must be in [0, {vocab})")
        scheduler = make_scheduler(self.config, self.build, self.num_blocks, None, None)
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

    def generate(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams],
                 eos_token_id: int | None = None) -> list[list[int]]:
        per_seq = params if isinstance(params, list) else [params] * len(prompts)
        vocab = self.config.vocab_size
        if any(not 0 <= t < vocab for p in prompts for t in p):
            raise ValueError(f"prompt token ids must be in [0, {vocab})")
        scheduler = make_scheduler(self.config, self.build, self.num_blocks, eos_token_id,
                                   self.tokenizer)
        requests = [Request(i, list(p), sp) for i, (p, sp) in enumerate(zip(prompts, per_seq))]
        generators = {r.request_id: r.params.generator() for r in requests}
        for r in requests:
            scheduler.add(r)
        while scheduler.has_work():
            chunks = scheduler.schedule()
            if not chunks:
                raise RuntimeError("the scheduler could not place any request (KV cache too small)")
            logits = self.step(scheduler, chunks)
            scheduler.finish_step(chunks, sample_chunks(chunks, logits, generators))
        return [r.output for r in requests]
