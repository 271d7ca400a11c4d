"""A python-backend model's config as the models of this package read it: its string
parameters, "true"/"false" flags, the check that its declared inputs are exactly its
interface's, and the limits of the engines it serves (context length, vocabulary, end tokens)."""

from __future__ import annotations

import json
from pathlib import Path

from step3_trt.build_config import BuildConfig
from step3_trt.config import Step3Config
from step3_trt.generation_config import GenerationConfig
from step3_trt.serve.interfaces import Interface
from step3_trt.serve.request import Limits
from step3_trt.tokenizer import Step3Tokenizer, load_tokenizer


def engine_limits(engine_dir: Path, tokenizer: Step3Tokenizer) -> Limits:
    build = BuildConfig.from_file(engine_dir / "build_config.yaml")
    meta = json.loads((engine_dir / "attention" / "rank0" / "engine.json").read_text())
    cfg = Step3Config.from_dict(meta["architecture"])
    return Limits.of(tokenizer, build.runtime.max_seq_len or cfg.max_position_embedding,
                     cfg.vocab_size, GenerationConfig.from_dir(engine_dir, cfg).eos_token_ids)


def engine_tokenizer(engine_dir: Path) -> tuple[Step3Tokenizer, Limits]:
    """The engines' tokenizer and the limits requests are checked against."""
    tokenizer = load_tokenizer(engine_dir)
    if tokenizer is None:
        raise FileNotFoundError(f"{engine_dir} has no tokenizer (tokenizer/tokenizer.json)")
    return tokenizer, engine_limits(engine_dir, tokenizer)


def model_interface(config: dict, required: tuple[str, ...],
                    interfaces: dict[str, Interface]) -> tuple[dict[str, str], Interface]:
    """A model's parameters and its interface (the `interface` parameter), once the required
    parameters are set and the declared inputs are the interface's."""
    params = model_parameters(config)
    missing = [k for k in (*required, "interface") if not params.get(k)]
    if missing:
        raise ValueError(f"model parameter(s) {', '.join(missing)} not set: start the server "
                         f"with `step3-trt serve --engines DIR`")
    if params["interface"] not in interfaces:
        raise ValueError(f"model parameter interface must be one of "
                         f"{', '.join(interfaces)}, got {params['interface']!r}")
    interface = interfaces[params["interface"]]
    check_declared(config, interface)
    return params, interface


def request_inputs(request, interface: Interface, get_input) -> dict:
    """The interface's inputs a request carries, as numpy arrays (`get_input`: the python
    backend's pb_utils.get_input_tensor_by_name)."""
    inputs = {}
    for name in interface.specs:
        tensor = get_input(request, name)
        if tensor is not None:
            inputs[name] = tensor.as_numpy()
    return inputs


def model_parameters(config: dict) -> dict[str, str]:
    return {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}


def flag_parameter(params: dict[str, str], key: str, default: bool) -> bool:
    value = params.get(key, "")
    if value == "":
        return default
    if value not in ("true", "false"):
        raise ValueError(f"model parameter {key} must be \"true\" or \"false\", got {value!r}")
    return value == "true"


def check_declared(config: dict, interface: Interface) -> None:
    """The config's inputs are exactly the interface's tensors (nothing declared goes unread)."""
    declared = {i["name"] for i in config.get("input", [])}
    extra, missing = sorted(declared - set(interface.specs)), sorted(set(interface.specs) -
                                                                      declared)
    if extra or missing:
        raise ValueError(f"{config['name']}: config.pbtxt does not match the {interface.name} "
                         f"interface (declared, not known: {extra}; known, not declared: "
                         f"{missing})")
