"""torch.export + AOTInductor for one role graph, with a content-addressed compile cache.

Graphs depend only on shapes, dtypes and a few attributes (weights are inputs), so data-parallel
attention replicas, evenly split FFN ranks and repeated builds all reuse one compiled package.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from torch.export import Dim

from step3_trt.engine import graphs
from step3_trt.engine.signatures import Fp8Layout, GraphSignature

# Example sizes for tracing; every one of these dimensions is dynamic in the compiled graph.
T, S, M, B = 5, 3, 4, 9


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "step3-trt" / "graphs"


def graph_module(sig: GraphSignature, arch: dict, fp8: Fp8Layout | None = None) -> torch.nn.Module:
    eps = arch["rms_norm_eps"]
    heads, head_dim = arch["num_attention_heads"], arch["head_dim"]
    return {
        "embed": lambda: graphs.Embed(),
        "attn_prefill": lambda: graphs.Attention(heads, head_dim, eps, decode=False, fp8=fp8),
        "attn_decode": lambda: graphs.Attention(heads, head_dim, eps, decode=True, fp8=fp8),
        "router": lambda: graphs.Router(arch["moe_top_k"], arch.get("norm_expert_weight", False)),
        "head": lambda: graphs.Head(eps),
        "ffn_moe": lambda: graphs.MoeFfn(fp8),
        "ffn_shared": lambda: graphs.SwiGluMlp(fp8),
        "ffn_dense": lambda: graphs.SwiGluMlp(fp8),
    }[sig.name]()


def runtime_examples(sig: GraphSignature, arch: dict, act: torch.dtype, kv: torch.dtype,
                     block_size: int, device: str):
    """Example runtime inputs and their dynamic dimensions."""
    H, D, K = arch["hidden_size"], arch["head_dim"], arch["moe_top_k"]
    tokens = Dim("tokens", min=1, max=1 << 20)
    seqs = Dim("seqs", min=1, max=1 << 16)
    blocks = Dim("blocks", min=1, max=1 << 24)
    n = S if sig.name == "attn_decode" else T
    n_dim = seqs if sig.name == "attn_decode" else tokens
    i32 = dict(dtype=torch.int32, device=device)
    i64 = dict(dtype=torch.int64, device=device)
    table = {
        "ids": (torch.arange(n, **i64), {0: n_dim}),
        "x": (torch.randn(n, H, device=device).to(act), {0: n_dim}),
        "y": (torch.randn(n, H, device=device).to(act), {0: n_dim}),
        "positions": (torch.arange(n, **i64), {0: n_dim}),
        "slot_mapping": (torch.arange(n, **i64), {0: n_dim}),
        "k_cache": (torch.zeros(B, block_size, D, device=device).to(kv), {0: blocks}),
        "v_cache": (torch.zeros(B, block_size, D, device=device).to(kv), {0: blocks}),
        "block_tables": (torch.arange(S * M, **i32).view(S, M) % B,
                         {0: seqs, 1: Dim("max_blocks")}),
        "seq_lens": (torch.full((S,), 2, **i32), {0: seqs}),
        "cu_seqlens_q": (torch.tensor([0, 2, 3, n], **i32), {0: seqs + 1}),
        "topk_weights": (torch.rand(n, K, device=device).to(act), {0: n_dim}),
        "topk_ids": (torch.randint(0, arch["moe_num_experts"], (n, K), **i32), {0: n_dim}),
        "expert_offset": (torch.zeros((), **i32), None),
    }
    if sig.name == "head":  # one row per sequence
        table["x"] = (torch.randn(S, H, device=device).to(act), {0: seqs})
    if sig.name == "attn_decode":
        table["cu_seqlens_q"] = (torch.arange(S + 1, **i32), {0: seqs + 1})
    return [table[name] for name in sig.runtime_inputs]


def cache_key(sig: GraphSignature, arch: dict, weights: list[torch.Tensor],
              runtime: list[torch.Tensor], plugin_versions: dict, device: str,
              graph_format: str) -> str:
    blob = json.dumps({
        "graph": sig.to_dict(), "arch": {k: arch[k] for k in sorted(arch)},
        "weights": [(tuple(w.shape), str(w.dtype)) for w in weights],
        "runtime": [(t.dim(), str(t.dtype)) for t in runtime],
        "plugins": plugin_versions, "torch": torch.__version__, "device": device,
        "graph_format": graph_format,
        "graphs_source": hashlib.sha256(Path(graphs.__file__).read_bytes()).hexdigest(),
    }, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def save_exported(program: torch.export.ExportedProgram, path: Path) -> None:
    """Write a program that holds no tensors (weights are inputs), so loading it unpickles
    nothing: the example inputs, the only tensors torch.export.save would pickle, are dropped."""
    if program.state_dict or program.constants:
        raise ValueError(f"{path.name}: an exported graph must take its weights as inputs")
    program._example_inputs = None
    torch.export.save(program, str(path))


def compile_graph(sig: GraphSignature, arch: dict, weights: list[torch.Tensor], act: torch.dtype,
                  kv: torch.dtype, block_size: int, device: str, plugin_versions: dict,
                  out_file: Path, cache_dir: Path, graph_format: str = "aoti",
                  fp8: Fp8Layout | None = None) -> bool:
    """Export `sig` and store it in `graph_format` (`aoti`: AOT-compiled package; `exported`:
    the serialized program) at `out_file`. Returns True if it came from the cache."""
    examples = runtime_examples(sig, arch, act, kv, block_size, device)
    runtime = [t for t, _ in examples]
    key = cache_key(sig, arch, weights, runtime, plugin_versions, device, graph_format)
    cached = cache_dir / f"{sig.name}-{key}.pt2"
    if not cached.is_file():
        module = graph_module(sig, arch, fp8)
        n_scales = len(fp8.templates) if fp8 else 0
        dynamic = [d for _, d in examples] + [None] * (len(weights) - n_scales)
        if n_scales:  # the scales arrive through the graphs' `*scales`
            dynamic.append((None,) * n_scales)
        with torch.no_grad():
            program = torch.export.export(module, (*runtime, *weights), dynamic_shapes=dynamic)
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".tmp{os.getpid()}.pt2")
        if graph_format == "aoti":
            torch._inductor.aoti_compile_and_package(program, package_path=str(tmp))
        else:
            save_exported(program, tmp)
        os.replace(tmp, cached)
        hit = False
    else:
        hit = True
    shutil.copy2(cached, out_file)
    return hit
