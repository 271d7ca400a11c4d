"""The input tensors of each generating model, and what each one sets.

Three models generate through the AFD job: `step3` (text in, text out), `tensorrt_llm` (token
ids in and out, as the TensorRT-LLM backend's model of that name) and `tensorrt_llm_bls` (text
in and out, as the TensorRT-LLM backend's BLS model: its preprocessing, tensorrt_llm and
postprocessing steps in one). Each tensor of an interface is one of:
- `Field`: it sets a request field (one name per concept: `top_k` whether the tensor is `top_k`
  or `runtime_top_k`); two tensors of one field (`random_seed` and `seed`) may not both be sent;
- `Fixed`: accepted only at the value that needs no feature this project lacks (`beam_width` 1);
- `Empty`: accepted only when it holds nothing (the ensemble always passes `embedding_bias`);
- `Refused`: its feature is missing here, so any value gets a 400 naming it (LoRA, draft tokens,
  prompt tables, guided decoding, ...).
Nothing a client sends is ignored. The model's config.pbtxt must declare exactly these tensors
(the model refuses to load otherwise: serve/backend.py), so config and table cannot drift.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from step3_trt.serve import tensors
from step3_trt.serve.tensors import BadRequest, Inputs

Reader = Callable[[Inputs, str], object]


@dataclass(frozen=True)
class Field:
    name: str  # the request field
    read: Reader


@dataclass(frozen=True)
class Fixed:
    value: object
    read: Reader
    why: str  # what the project lacks that another value would need


@dataclass(frozen=True)
class Empty:
    read: Reader
    why: str


@dataclass(frozen=True)
class Refused:
    why: str


Spec = Field | Fixed | Empty | Refused


@dataclass(frozen=True)
class Interface:
    name: str
    specs: dict[str, Spec]  # tensor name -> what it does
    required: tuple[str, ...]
    defaults: dict[str, object] = field(default_factory=dict)  # field -> value when not sent
    parameters: dict[str, str] = field(default_factory=dict)  # request parameter -> the field
    #   it must agree with (e.g. `Streaming`, which the TensorRT-LLM client sends with `streaming`)
    token_prompt: bool = False  # the prompt is token ids (else text, tokenized at admission)
    stop_strings: bool = False  # stop words end the text before them (step3), else they are
    #   token sequences that stay in the output (TensorRT-LLM)


class Fields:
    """The request fields read from one request, each with the tensor it came from."""

    def __init__(self, values: dict[str, tuple[str, object]], defaults: dict[str, object]):
        self.values, self.defaults = values, defaults

    def get(self, name: str):
        got = self.values.get(name)
        return self.defaults.get(name) if got is None else got[1]

    def given(self, name: str) -> bool:
        return name in self.values

    def tensor(self, name: str) -> str:
        """The input tensor that set field `name` (for error messages)."""
        got = self.values.get(name)
        return got[0] if got is not None else name


def read_fields(interface: Interface, inputs: Inputs, parameters: dict) -> Fields:
    """Every input checked against the interface; a missing required one, a refused one, a fixed
    or empty one with another value, or two tensors of one field are a `BadRequest`."""
    for name in interface.required:
        if name not in inputs:
            raise BadRequest(f"missing required input {name}")
    values: dict[str, tuple[str, object]] = {}
    for name in sorted(inputs):
        spec = interface.specs.get(name)
        if spec is None:  # Triton refuses undeclared tensors; this guards the table
            raise BadRequest(f"{interface.name} takes no input {name}")
        if isinstance(spec, Refused):
            raise BadRequest(f"{name}: {spec.why}")
        if isinstance(spec, Fixed):
            value = spec.read(inputs, name)
            if value != spec.value:
                raise BadRequest(f"{name} must be {_show(spec.value)} ({spec.why}), got "
                                 f"{_show(value)}")
        elif isinstance(spec, Empty):
            if spec.read(inputs, name):
                raise BadRequest(f"{name} must be empty: {spec.why}")
        else:
            value = spec.read(inputs, name)
            if spec.name in values:
                raise BadRequest(f"give one of {values[spec.name][0]} and {name}, not both")
            values[spec.name] = (name, value)
    fields = Fields(values, interface.defaults)
    _check_parameters(interface, parameters, fields)
    return fields


def _check_parameters(interface: Interface, parameters: dict, fields: Fields) -> None:
    """Request parameters (HTTP generate turns JSON keys that are no inputs into these): Triton's
    own (`triton_...`) pass, the interface's must agree with their field, the rest are refused."""
    unknown = sorted(k for k in parameters if not k.startswith("triton_")
                     and k not in interface.parameters)
    if unknown:
        raise BadRequest(f"unknown parameter(s) {', '.join(unknown)}; {interface.name} takes the "
                         f"inputs {', '.join(interface.specs)}")
    for key, name in interface.parameters.items():
        if key in parameters and parameters[key] != bool(fields.get(name)):
            raise BadRequest(f"parameter {key} ({parameters[key]!r}) disagrees with "
                             f"{fields.tensor(name)} ({bool(fields.get(name))})")


def _show(value) -> str:
    return str(value).lower() if isinstance(value, bool) else repr(value)


# ---- the tables --------------------------------------------------------------------------
NO_BEAMS = "beam search is not supported"
NO_LENGTH_PENALTY = "it applies to beam search, which is not supported: only 1.0 (none)"
NO_LOG_PROBS = "log probabilities are not reported"
NO_LOGITS = "logits are not returned"
NO_DRAFTS = "draft tokens (speculative decoding) are not supported"
NO_PROMPT_TABLES = "prompt tables (p-tuning, multimodal embeddings) are not supported"
NO_LORA = "LoRA adapters are not supported"
NO_GUIDES = "guided decoding is not supported"
NO_BIAS = "embedding bias is not supported"
NO_ENCODER = "Step-3 is a decoder-only model (no encoder-decoder inputs)"

F, Fx = Field, Fixed
SAMPLING = {  # the text models' names (TensorRT-LLM's ensemble and BLS)
    "temperature": F("temperature", tensors.number),
    "top_k": F("top_k", tensors.integer),
    "top_p": F("top_p", tensors.number),
    "random_seed": F("seed", tensors.integer),
    "seed": F("seed", tensors.integer),  # r25.05's name
    "min_length": F("min_tokens", tensors.integer),
    "min_tokens": F("min_tokens", tensors.integer),  # r25.05's name
    "repetition_penalty": F("repetition_penalty", tensors.number),
    "presence_penalty": F("presence_penalty", tensors.number),
    "frequency_penalty": F("frequency_penalty", tensors.number),
    "end_id": F("end_id", tensors.integer),
    "pad_id": F("pad_id", tensors.integer),
    "beam_width": Fx(1, tensors.integer, NO_BEAMS),
    "length_penalty": Fx(1.0, tensors.number, NO_LENGTH_PENALTY),
    "return_log_probs": Fx(False, tensors.flag, NO_LOG_PROBS),
}
TEXT = {
    "text_input": F("prompt", tensors.text),
    "max_tokens": F("max_tokens", tensors.integer),
    "stream": F("stream", tensors.flag),
    "bad_words": F("bad_words", tensors.strings),
    "stop_words": F("stop_words", tensors.strings),
    "exclude_input_in_output": F("exclude_input", tensors.flag),
}
TENSORRT_LLM_EXTRAS = {  # what the ensemble and the BLS model take beyond step3's inputs
    "decoder_text_input": Refused(NO_ENCODER),
    "return_context_logits": Fx(False, tensors.flag, NO_LOGITS),
    "return_generation_logits": Fx(False, tensors.flag, NO_LOGITS),
    "prompt_embedding_table": Refused(NO_PROMPT_TABLES),
    "prompt_vocab_size": Refused(NO_PROMPT_TABLES),
    "prompt_table_extra_id": Refused(NO_PROMPT_TABLES),
    "embedding_bias_words": Empty(tensors.strings, NO_BIAS),
    "embedding_bias_weights": Empty(tensors.numbers, NO_BIAS),
    "guided_decoding_guide_type": Refused(NO_GUIDES),
    "guided_decoding_guide": Refused(NO_GUIDES),
}

# step3: TensorRT-LLM's text names; stop words are stop strings (the text ends before them)
STEP3 = Interface("step3", {**TEXT, **SAMPLING}, required=("text_input",),
                  defaults={"max_tokens": 16, "min_tokens": 0}, stop_strings=True)

# TensorRT-LLM's defaults: at least one token before an end token (min_length 1), seed 0
TRTLLM_DEFAULTS = {"min_tokens": 1, "seed": 0}

TENSORRT_LLM_BLS = Interface("tensorrt_llm_bls", {
    **TEXT, **SAMPLING, **TENSORRT_LLM_EXTRAS,
    "image_input": Refused("images are not supported by tensorrt_llm_bls"),
    "num_draft_tokens": Fx(0, tensors.integer, NO_DRAFTS),
    "use_draft_logits": Fx(False, tensors.flag, NO_DRAFTS),
}, required=("text_input", "max_tokens"), defaults=TRTLLM_DEFAULTS)

TENSORRT_LLM = Interface("tensorrt_llm", {
    "input_ids": F("prompt", tensors.token_ids),
    "input_lengths": F("prompt_length", tensors.integer),
    "request_output_len": F("max_tokens", tensors.integer),
    "streaming": F("stream", tensors.flag),
    "exclude_input_in_output": F("exclude_input", tensors.flag),
    "end_id": F("end_id", tensors.integer),
    "pad_id": F("pad_id", tensors.integer),
    "stop_words_list": F("stop_words", tensors.word_lists),
    "bad_words_list": F("bad_words", tensors.word_lists),
    "temperature": F("temperature", tensors.number),
    "runtime_top_k": F("top_k", tensors.integer),
    "runtime_top_p": F("top_p", tensors.number),
    "random_seed": F("seed", tensors.integer),
    "seed": F("seed", tensors.integer),
    "min_length": F("min_tokens", tensors.integer),
    "min_tokens": F("min_tokens", tensors.integer),
    "repetition_penalty": F("repetition_penalty", tensors.number),
    "presence_penalty": F("presence_penalty", tensors.number),
    "frequency_penalty": F("frequency_penalty", tensors.number),
    "beam_width": Fx(1, tensors.integer, NO_BEAMS),
    "len_penalty": Fx(1.0, tensors.number, NO_LENGTH_PENALTY),
    "early_stopping": Refused("it applies to beam search, which is not supported"),
    "beam_search_diversity_rate": Fx(0.0, tensors.number, NO_BEAMS),
    "runtime_top_p_decay": Fx(1.0, tensors.number, "top-p decay is not supported"),
    "runtime_top_p_min": Refused("top-p decay is not supported"),
    "runtime_top_p_reset_ids": Refused("top-p decay is not supported"),
    "return_log_probs": Fx(False, tensors.flag, NO_LOG_PROBS),
    "return_context_logits": Fx(False, tensors.flag, NO_LOGITS),
    "return_generation_logits": Fx(False, tensors.flag, NO_LOGITS),
    "stop": Fx(False, tensors.flag, "stopping a request by its id is not supported; cancel "
                                    "it (gRPC stream cancellation, or close the connection)"),
    "decoder_input_ids": Empty(tensors.token_ids, NO_ENCODER),
    "decoder_input_lengths": Fx(0, tensors.integer, NO_ENCODER),
    "embedding_bias": Empty(tensors.numbers, NO_BIAS),
    "draft_input_ids": Refused(NO_DRAFTS),
    "draft_logits": Refused(NO_DRAFTS),
    "draft_acceptance_threshold": Refused(NO_DRAFTS),
    "prompt_embedding_table": Refused(NO_PROMPT_TABLES),
    "prompt_table_extra_ids": Refused(NO_PROMPT_TABLES),
    "prompt_vocab_size": Refused(NO_PROMPT_TABLES),
    "lora_task_id": Refused(NO_LORA),
    "lora_weights": Refused(NO_LORA),
    "lora_config": Refused(NO_LORA),
    "context_phase_params": Refused("disaggregated context and generation phases are not "
                                    "supported"),
    "guided_decoding_guide_type": Refused(NO_GUIDES),
    "guided_decoding_guide": Refused(NO_GUIDES),
}, required=("input_ids", "input_lengths", "request_output_len"), defaults=TRTLLM_DEFAULTS,
    parameters={"Streaming": "stream"}, token_prompt=True)

INTERFACES = {i.name: i for i in (STEP3, TENSORRT_LLM, TENSORRT_LLM_BLS)}

# The TensorRT-LLM ensemble's tokenizer steps (serve/tokenizer_models.py)
PREPROCESSING = Interface("preprocessing", {
    "QUERY": F("prompt", tensors.text),
    "DECODER_QUERY": Refused(NO_ENCODER),
    "REQUEST_OUTPUT_LEN": F("max_tokens", tensors.integer),
    "BAD_WORDS_DICT": F("bad_words", tensors.strings),
    "STOP_WORDS_DICT": F("stop_words", tensors.strings),
    "EMBEDDING_BIAS_WORDS": Empty(tensors.strings, NO_BIAS),
    "EMBEDDING_BIAS_WEIGHTS": Empty(tensors.numbers, NO_BIAS),
    "END_ID": F("end_id", tensors.integer),
    "PAD_ID": F("pad_id", tensors.integer),
    "PROMPT_TABLE_EXTRA_ID": Refused(NO_PROMPT_TABLES),
}, required=("QUERY", "REQUEST_OUTPUT_LEN"))

POSTPROCESSING = Interface("postprocessing", {
    "TOKENS_BATCH": F("tokens", tensors.array),
    "SEQUENCE_LENGTH": F("lengths", tensors.array),
    "CUM_LOG_PROBS": F("cum_log_probs", tensors.array),
    "OUTPUT_LOG_PROBS": F("output_log_probs", tensors.array),
    "CONTEXT_LOGITS": F("context_logits", tensors.array),
    "GENERATION_LOGITS": F("generation_logits", tensors.array),
    "BATCH_INDEX": F("batch_index", tensors.array),
}, required=("TOKENS_BATCH", "SEQUENCE_LENGTH"))
