"""Build the reference model from a checkpoint, streaming one tensor at a time."""

from __future__ import annotations

import torch

from step3_trt.checkpoint.reader import CheckpointReader
from step3_trt.model.reference import Step3ForCausalLM

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str | None, reader: CheckpointReader) -> torch.dtype:
    """`None` or "auto" means the checkpoint's own `torch_dtype`."""
    name = reader.config.torch_dtype if name in (None, "auto") else name
    if name not in DTYPES:
        raise ValueError(f"unsupported dtype {name!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


def load_reference_model(reader: CheckpointReader, dtype: str | None = None,
                         device: str | torch.device = "cpu") -> Step3ForCausalLM:
    reader.validate()
    with torch.device("meta"):
        model = Step3ForCausalLM(reader.config)
    model = model.to_empty(device=device).to(resolve_dtype(dtype, reader))
    params = dict(model.named_parameters())
    for name, tensor in reader.iter_text():
        with torch.no_grad():
            params.pop(name).copy_(tensor)
    assert not params, f"parameters not in the checkpoint layout: {sorted(params)}"
    return model.eval()
