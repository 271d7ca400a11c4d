"""The trained model shipped in models/step3-tiny: valid, loadable, and actually trained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from step3_trt.checkpoint.reader import CheckpointReader
from step3_trt.config import Step3Config
from step3_trt.model.generate import generate
from step3_trt.model.load import load_reference_model
from step3_trt.sampling import SamplingParams
from step3_trt.tokenizer import Step3Tokenizer
from step3_trt.tools.perplexity import evaluate
from step3_trt.tools.train import STDLIB_TINY

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "step3-tiny"
HELDOUT = ROOT / "data" / "heldout.txt"


@pytest.fixture(scope="module")
def reader():
    return CheckpointReader(MODEL).validate()


@pytest.fixture(scope="module")
def model(reader):
    torch.manual_seed(0)
    return load_reference_model(reader, dtype="float32")


@pytest.fixture(scope="module")
def tokenizer():
    return Step3Tokenizer.from_dir(MODEL)


def test_layout_and_config(reader):
    assert reader.config == Step3Config.from_dict(STDLIB_TINY)
    assert reader.raw_config["model_type"] == "step3_vl" and reader.vision_names
    assert reader.config.dense_layers and reader.config.moe_layers
    size = sum(f.stat().st_size for f in MODEL.glob("*.safetensors"))
    assert size <= 20 * 1024**2
    assert len(list(MODEL.glob("*.safetensors"))) > 1  # sharded, with an index, as released


def test_tokenizer_matches_config(reader, tokenizer):
    cfg = reader.config
    assert tokenizer.tokenizer.get_vocab_size() == cfg.vocab_size
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (cfg.bos_token_id, cfg.eos_token_id)


def test_heldout_perplexity_is_far_below_uniform(model, tokenizer, reader):
    text = HELDOUT.read_text(encoding="utf-8")
    result = evaluate(model, tokenizer, text, seq_len=256, max_windows=16)
    uniform = reader.config.vocab_size  # perplexity of a uniform guess over the vocabulary
    assert result.tokens == 16 * 256
    assert result.perplexity < uniform / 10
    # Consistent with the full-file number recorded at training time (a 16-window sample).
    recorded = json.loads((MODEL / "TRAINING.json").read_text())["heldout"]["perplexity"]
    assert recorded / 2 < result.perplexity < recorded * 2


def test_greedy_generation_is_printable_text(model, tokenizer, reader):
    prompts = ["Return the number of", "Raise ValueError if"]
    outs = generate(model, [tokenizer.encode(p) for p in prompts],
                    SamplingParams(max_new_tokens=32, greedy=True),
                    eos_token_id=reader.config.eos_token_id)
    for out in outs:
        text = tokenizer.decode(out)
        assert len(text.strip()) >= 16
        assert all(ch.isprintable() or ch in "\n\t" for ch in text), repr(text)
        assert sum(ch.isalpha() for ch in text) > len(text) / 2, repr(text)
