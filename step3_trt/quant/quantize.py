"""`step3-trt quantize`: a BF16/FP32 Step-3 checkpoint -> an FP8 checkpoint in the HF layout.

One decoder layer is in memory at a time: calibration hidden states pass through the layers in
order (full precision), each layer is calibrated with ModelOpt (`calibrate.py`), then its
tensors are quantized and streamed to the output, with the scales `scheme.py` describes.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from step3_trt.chat.template import TEMPLATE_DIR as CHAT_TEMPLATE_DIR
from step3_trt.checkpoint.layout import layer_specs, text_specs
from step3_trt.checkpoint.reader import CheckpointReader
from step3_trt.checkpoint.safetensors_header import DTYPES, CheckpointError
from step3_trt.checkpoint.writer import PlannedTensor, StreamingShardWriter, atomic_directory
from step3_trt.model.reference import DecoderLayer
from step3_trt.quant.calib_data import calibration_windows
from step3_trt.quant.calibrate import activation_scale, calibrate_layer, quantize_weight
from step3_trt.quant.scheme import Fp8Scheme
from step3_trt.tokenizer import Step3Tokenizer

SHARD_BYTES = 4 * 1024**3


@dataclass(frozen=True)
class QuantizeOptions:
    calib_data: Path
    calib_size: int = 32  # sequences
    calib_seq_len: int = 256  # tokens per sequence
    batch_size: int = 8  # sequences per calibration forward
    scheme: Fp8Scheme = Fp8Scheme()


def quantize_checkpoint(checkpoint: str | Path, out: str | Path, opts: QuantizeOptions, *,
                        overwrite: bool = False, progress: bool = True) -> Path:
    reader = CheckpointReader(checkpoint).validate()
    if reader.quant is not None:
        raise CheckpointError(f"{checkpoint} is already quantized "
                              f"({reader.raw_config['quantization_config'].get('quant_method')}); "
                              f"pass it to `convert` as it is")
    cfg, scheme = reader.config, opts.scheme
    tokenizer = Step3Tokenizer.from_dir(reader.root)
    tokens = calibration_windows(opts.calib_data, tokenizer, opts.calib_size, opts.calib_seq_len)
    layout = [PlannedTensor(s.name, s.shape, s.dtype or cfg.torch_dtype)
              for s in scheme.checkpoint_specs(text_specs(cfg))]
    layout += [PlannedTensor(n, reader.entries[n].shape, DTYPES[reader.entries[n].dtype][0])
               for n in reader.vision_names]
    with atomic_directory(out, overwrite=overwrite) as tmp:
        writer = StreamingShardWriter(tmp, layout, SHARD_BYTES)
        embed = reader.get("model.embed_tokens.weight")
        writer.write("model.embed_tokens.weight", embed)
        hidden = [embed.float()[b] for b in tokens.split(opts.batch_size)]  # [B, L, H] each
        del embed
        for i in tqdm(range(cfg.num_hidden_layers), desc="quantize", unit="layer",
                      disable=not progress):
            hidden = _quantize_layer(reader, i, hidden, scheme, writer)
        for name in ("model.norm.weight", "lm_head.weight", *reader.vision_names):
            writer.write(name, reader.get(name))
        writer.close()
        config = dict(reader.raw_config)
        config["quantization_config"] = scheme.to_config(producer={
            "name": "step3-trt quantize", "calibration": {
                "data": Path(opts.calib_data).name, "sequences": opts.calib_size,
                "seq_len": opts.calib_seq_len, "algorithm": "max (nvidia-modelopt)"}})
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        for f in sorted(reader.root.iterdir()):  # tokenizer, chat templates, generation config
            if f.is_file() and f.name != "config.json" and ".safetensors" not in f.name:
                shutil.copy2(f, tmp / f.name)
        if (reader.root / CHAT_TEMPLATE_DIR).is_dir():
            shutil.copytree(reader.root / CHAT_TEMPLATE_DIR, tmp / CHAT_TEMPLATE_DIR)
    return Path(out)


def _quantize_layer(reader: CheckpointReader, i: int, hidden: list[torch.Tensor],
                    scheme: Fp8Scheme, writer: StreamingShardWriter) -> list[torch.Tensor]:
    """Calibrate and write layer i; returns the hidden states leaving it (full precision)."""
    cfg = reader.config
    prefix = f"model.layers.{i}."
    with torch.device("meta"):
        layer = DecoderLayer(cfg, i)
    layer = layer.to_empty(device="cpu").float()
    stored = {}
    for spec in layer_specs(cfg, i):
        stored[spec.name] = reader.get(spec.name)
        layer.get_parameter(spec.name.removeprefix(prefix)).data.copy_(stored[spec.name])
    amax, out = calibrate_layer(layer, hidden, scheme.kv_cache_fp8)
    del layer
    for spec in layer_specs(cfg, i):
        w = stored.pop(spec.name)
        if not scheme.quantizes(spec):
            writer.write(spec.name, w)
            continue
        q, s = quantize_weight(w, scheme.weight_granularity)
        writer.write(spec.name, q)
        for extra in scheme.extra_specs(spec):
            if extra.name == scheme.scale_name(spec.name):
                writer.write(extra.name, s)
            else:  # input_scale of this linear, or the layer's k_scale / v_scale
                key = extra.name.removeprefix(prefix).removesuffix("_scale")
                key = key.removesuffix(".input")
                writer.write(extra.name, activation_scale(amax[key]))
    return out
