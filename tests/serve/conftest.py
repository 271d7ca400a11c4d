"""One `step3-trt serve` for the serving tests (engines of the bundled model, 2 attention + 2
FFN ranks, with the OpenAI server on `--openai-port`), and the reference model's greedy outputs
to compare against."""

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
    srv = Server(bundled_engines, tmp_path_factory.mktemp("srv") / "run", openai=True).start()
    yield srv
    assert srv.stop() == 0


@pytest.fixture(scope="session")
def reference_ids():
    """reference_ids(prompt_ids, max_tokens) -> greedy continuation ids, cached; the model stops
    on every end-of-sequence id the runtime stops on (generation_config.py's union, <|EOT|>
    included). In float32, the engines' dtype: in the checkpoint's bfloat16 some next-token
    logits tie."""
    from step3_trt.checkpoint.reader import CheckpointReader
    from step3_trt.generation_config import GenerationConfig
    from step3_trt.model.generate import generate
    from step3_trt.model.load import load_reference_model
    from step3_trt.sampling import SamplingParams

    reader = CheckpointReader(DEFAULT_CHECKPOINT)
    model = load_reference_model(reader, dtype="float32")
    stops = GenerationConfig.from_dir(DEFAULT_CHECKPOINT, reader.config)
    cache: dict = {}

    def run(prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
        todo = [p for p in prompts if (tuple(p), max_tokens) not in cache]
        if todo:
            params = stops.with_stops(SamplingParams(max_new_tokens=max_tokens, greedy=True))
            for p, ids in zip(todo, generate(model, todo, params)):
                cache[(tuple(p), max_tokens)] = ids
        return [cache[(tuple(p), max_tokens)] for p in prompts]

    return run


@pytest.fixture(scope="session")
def reference(reference_ids):
    """reference(prompts, max_tokens) -> greedy continuations (ids and text) of text prompts,
    encoded as the server encodes them (BOS from the tokenizer's post-processor)."""
    from step3_trt.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(DEFAULT_CHECKPOINT)

    def run(prompts: list[str], max_tokens: int) -> list[tuple[list[int], str]]:
        outs = reference_ids([tokenizer.encode(p) for p in prompts], max_tokens)
        return [(ids, tokenizer.decode(ids)) for ids in outs]

    return run
