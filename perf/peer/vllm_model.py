"""The bundled Step-3 checkpoint as vLLM's text-only model: `Step3TextForCausalLM`.

vLLM resolves a model by `architectures` in config.json: the released form names
`Step3VLForConditionalGeneration`, whose module (`step3_vl`) imports torchvision, and no CPU
torchvision exists for torch 2.13. Its text decoder alone is registered as `Step3TextForCausalLM`
(module `step3_text`, config class `Step3TextConfig` for model_type `step3_text`), so the
converted directory has the checkpoint's `text_config` as its whole config.json, the text tensors
only (vLLM's weight loader refuses names it has no parameter for, e.g. `vision_model.*`), and
the tokenizer files. No vLLM code is changed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

TEXT_PREFIXES = ("model.", "lm_head.")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def text_config(checkpoint: Path) -> dict:
    """config.json of `checkpoint` with `text_config` flattened into the top level."""
    config = json.loads((checkpoint / "config.json").read_text())
    text = dict(config.get("text_config", config))
    if text.get("model_type") != "step3_text":
        raise ValueError(f"{checkpoint}/config.json: text model_type must be step3_text, "
                         f"got {text.get('model_type')!r}")
    text["architectures"] = ["Step3TextForCausalLM"]
    return text


def write_vllm_model(checkpoint: Path, out: Path) -> Path:
    """Write the converted model directory `out` from the released-layout `checkpoint`."""
    index = json.loads((checkpoint / "model.safetensors.index.json").read_text())["weight_map"]
    tensors = {}
    for shard in sorted(set(index.values())):
        with safe_open(checkpoint / shard, framework="pt") as f:
            for name in f.keys():
                if name.startswith(TEXT_PREFIXES):
                    tensors[name] = f.get_tensor(name)
    if not tensors:
        raise ValueError(f"{checkpoint} has no text tensors ({', '.join(TEXT_PREFIXES)})")
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(text_config(checkpoint), indent=2) + "\n")
    for name in TOKENIZER_FILES:
        shutil.copyfile(checkpoint / name, out / name)
    return out
