"""Engines stored as exported programs (`graph_format: exported`), compiled when a rank loads
them: the format CUDA engines use where AOTInductor packages do not load (docs/decisions.md)."""

import json
import zipfile

import torch

from step3_trt.build_config import BuildConfig
from step3_trt.checkpoint.reader import CheckpointReader
from step3_trt.generation_config import GenerationConfig
from step3_trt.model.generate import generate
from step3_trt.model.load import load_reference_model
from step3_trt.runtime.local import LocalRunner
from step3_trt.sampling import SamplingParams
from tests.conftest import REPO, make_engines


def exported_config() -> BuildConfig:
    raw = BuildConfig.from_file(REPO / "build_configs" / "tiny-cpu.yaml").to_dict()
    raw.update(name="tiny-cpu-exported", graph_format="exported")
    return BuildConfig.from_dict(raw)


def test_exported_engines_give_the_reference_tokens(odd_checkpoint, tmp_path, graph_cache):
    _, engines = make_engines(odd_checkpoint, exported_config(), tmp_path, graph_cache)
    meta = json.loads((engines / "attention" / "rank0" / "engine.json").read_text())
    assert {g["format"] for g in meta["graphs"].values()} == {"exported"}
    # the stored programs carry no tensors (weights are inputs, example inputs dropped), so
    # loading them unpickles nothing: every data entry is a JSON config or empty
    with zipfile.ZipFile(engines / "attention" / "rank0" / "graphs" / "attn_prefill.pt2") as z:
        data = [i for i in z.infolist() if "/data/" in i.filename]
        assert data and all(i.filename.endswith(".json") or i.file_size == 0 for i in data), \
            [(i.filename, i.file_size) for i in data]
    model = load_reference_model(CheckpointReader(odd_checkpoint))
    g = torch.Generator().manual_seed(8)
    prompts = [torch.randint(0, model.config.vocab_size, (n,), generator=g).tolist()
               for n in (3, 21)]
    greedy = SamplingParams(max_new_tokens=12, greedy=True)
    stops = GenerationConfig.from_dir(odd_checkpoint, model.config)
    want = generate(model, prompts, stops.with_stops(greedy))
    assert LocalRunner(engines).generate(prompts, greedy) == want
