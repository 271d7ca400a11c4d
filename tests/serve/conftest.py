"""One `step3-trt serve` for the serving tests (engines of the bundled model, 2 attention + 2
FFN ranks), and the reference model's greedy outputs to compare against."""

from __future__ import annotations

import pytest

from step3_trt.presets import DEFAULT_CHECKPOINT
from tests.conftest import make_engines
from tests.serve.server import Server


@pytest.fixture(scope="session")
def bundled_engines(tmp_path_factory, graph_cache):
    return make_engines(DEFAULT_CHECKPOINT, "tiny-cpu-2a2f.yaml",
                        tmp_path_factory.mktemp("serve-engines"), graph_cache)[1]


@pytest.fixture(scope="package")  # stopped once tests/serve is done, not at session end
def server(bundled_engines, tmp_path_factory):
    srv = Server(bundled_engines, tmp_path_factory.mktemp("srv") / "run").start()
    yield srv
    assert srv.stop() == 0


@pytest.fixture(scope="session")
def reference():
    """reference(prompts, max_tokens) -> greedy continuations (ids and text), cached. In
    float32, the engines' dtype: in the checkpoint's bfloat16 some next-token logits tie."""
    from step3_trt.checkpoint.reader import CheckpointReader
    from step3_trt.model.generate import generate
    from step3_trt.model.load import load_reference_model
    from step3_trt.sampling import SamplingParams
    from step3_trt.tokenizer import load_tokenizer

    reader = CheckpointReader(DEFAULT_CHECKPOINT)
    model = load_reference_model(reader, dtype="float32")
    tokenizer = load_tokenizer(DEFAULT_CHECKPOINT)
    cache: dict = {}

    def run(prompts: list[str], max_tokens: int) -> list[tuple[list[int], str]]:
        todo = [p for p in prompts if (p, max_tokens) not in cache]
        if todo:
            outs = generate(model, [tokenizer.encode(p) for p in todo],
                            SamplingParams(max_new_tokens=max_tokens, greedy=True),
                            eos_token_id=reader.config.eos_token_id)
            for p, ids in zip(todo, outs):
                cache[(p, max_tokens)] = (ids, tokenizer.decode(ids))
        return [cache[(p, max_tokens)] for p in prompts]

    return run
