"""Placement P2 under the real mpiexec (CPU, float32 engines): `run` gives the reference model's
greedy tokens for 2A2F, 1A4F and a split whose EP size does not divide the expert count (6
experts over 4 EP groups), over both data planes; each token reaches at most top_k FFN ranks
(one for dense layers), some micro-batches leave FFN ranks without a token, and the summary's
byte counters equal the formula applied to the reference model's own routing of every token."""

import json

import pytest
import torch

from step3_trt.checkpoint.reader import CheckpointReader
from step3_trt.convert.placement import FfnPlacement
from step3_trt.generation_config import GenerationConfig
from step3_trt.model.generate import generate
from step3_trt.model.load import load_reference_model
from step3_trt.presets import DEFAULT_CHECKPOINT
from step3_trt.sampling import SamplingParams
from tests.conftest import make_engines
from tests.runtime.test_afd import config, request_lines, run_cli

pytestmark = pytest.mark.slow
MAX_NEW = 16


@pytest.fixture(scope="module")
def cases(tiny_checkpoint, engines_2a2f, tmp_path_factory, graph_cache):
    """name -> (checkpoint, engine dir): 2A2F (EP 2 of 6 experts), 1A4F on the bundled model
    (EP 4 of 8), 2A4F (EP 4 of 6: 1, 2, 1, 2 experts)."""
    bundled = make_engines(DEFAULT_CHECKPOINT, config(1, 4), tmp_path_factory.mktemp("b14"),
                           graph_cache)[1]
    uneven = make_engines(tiny_checkpoint, config(2, 4), tmp_path_factory.mktemp("t24"),
                          graph_cache)[1]
    return {"2a2f": (tiny_checkpoint, engines_2a2f[1]), "1a4f": (DEFAULT_CHECKPOINT, bundled),
            "2a4f-uneven": (tiny_checkpoint, uneven)}


def prompts_for(vocab: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(2, vocab, (n,), generator=g).tolist() for n in (1, 5, 12, 30, 3, 9)]


def reference(checkpoint, prompts):
    """The reference model's greedy tokens, and each MoE layer's expert ids for every token the
    engines process (prompt + outputs but the last, which is never fed back)."""
    model = load_reference_model(CheckpointReader(checkpoint), "float32")
    greedy = GenerationConfig.from_dir(checkpoint, model.config).with_stops(
        SamplingParams(max_new_tokens=MAX_NEW, greedy=True))
    outputs = generate(model, prompts, greedy)
    routes: dict[int, list[torch.Tensor]] = {}
    for layer, block in enumerate(model.model.layers):
        if block.is_moe:
            def recorded(x, route=block.moe.route, layer=layer):
                weights, ids = route(x)
                routes.setdefault(layer, []).append(ids.reshape(-1, ids.shape[-1]))
                return weights, ids
            block.moe.route = recorded
    with torch.no_grad():
        for p, out in zip(prompts, outputs):
            model(torch.tensor([p + out[:-1]]))
    return outputs, {layer: torch.cat(ids) for layer, ids in routes.items()}


def expected_links(cfg, placement: FfnPlacement, routes, tokens: int) -> dict:
    """The formula (float32 engines, so 4-byte hidden states, weights and ids): a MoE-layer
    token goes to each group owning one of its experts (tp ranks each) with H x 4 bytes of
    hidden state and K x (4 + 4) of routing, plus 4 bytes for its shared-expert row on one group;
    a dense-layer token to one group; every copy comes back as H x 4 bytes."""
    H, K, tp = cfg.hidden_size, cfg.moe_top_k, placement.tp
    owner = torch.tensor(placement.expert_groups())
    moe_copies = sum(tp * len(set(row)) for ids in routes.values()
                     for row in owner[ids].tolist())
    dense_copies = tp * tokens * len(cfg.dense_layers)
    return {"tokens": tokens, "moe_copies": moe_copies, "dense_copies": dense_copies,
            "a2f_bytes": moe_copies * (4 * H + 8 * K) + tp * tokens * len(cfg.moe_layers) * 4
            + dense_copies * 4 * H,
            "f2a_bytes": (moe_copies + dense_copies) * 4 * H}


@pytest.mark.parametrize("transport", ["mpi", "torch"])
@pytest.mark.parametrize("case", ["2a2f", "1a4f", "2a4f-uneven"])
def test_dispatch_gives_the_reference_tokens_and_counts_its_bytes(cases, case, transport,
                                                                  tmp_path):
    checkpoint, engines = cases[case]
    cfg = CheckpointReader(checkpoint).config
    prompts = prompts_for(cfg.vocab_size, seed=len(case))
    want, routes = reference(checkpoint, prompts)
    proc = run_cli("--engines", engines, *sum((["--prompt-ids", ",".join(map(str, p))]
                                               for p in prompts), []),
                   "--greedy", "--max-new-tokens", MAX_NEW, "--transport", transport)
    assert proc.returncode == 0, proc.stderr
    lines = request_lines(proc.stdout)
    assert [x["output_ids"] for x in lines] == want
    summary = json.loads(proc.stdout.splitlines()[-1])["summary"]
    assert summary["requests"] == len(prompts) and summary["errors"] == 0
    links = summary["links"]
    meta = json.loads((engines / "attention/rank0/engine.json").read_text())
    placement = FfnPlacement.from_dict(meta["mapping"]["placement"])
    tokens = sum(len(p) + len(out) - 1 for p, out in zip(prompts, want))
    assert {k: links[k] for k in ("tokens", "moe_copies", "dense_copies", "a2f_bytes",
                                  "f2a_bytes")} == expected_links(cfg, placement, routes, tokens)
    assert links["wire_hidden"] == "float32"
    assert 1 < links["moe_fanout"] <= cfg.moe_top_k and links["dense_fanout"] == 1
    assert links["a2f_bytes_per_token"] == round(links["a2f_bytes"] / tokens, 3)
    assert links["empty_messages"] > 0  # micro-batches with tokens, but none for some FFN rank
