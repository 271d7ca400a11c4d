"""The pure parts of the ensemble's tokenizer steps (serve/tokenizer_models.py says what they
do): tensors in, tensors out."""

from __future__ import annotations

import numpy as np

from step3_trt.serve.interfaces import Fields
from step3_trt.serve.request import Limits, check_ids, encode_fitting, end_ids_of, \
    max_tokens_of, text_prompt_of, word_ids
from step3_trt.serve.tensors import BadRequest, to_word_lists
from step3_trt.tokenizer import Step3Tokenizer


def preprocess(f: Fields, tokenizer: Step3Tokenizer, limits: Limits) -> dict[str, np.ndarray]:
    max_tokens = max_tokens_of(f, limits)
    ids = encode_fitting(tokenizer, text_prompt_of(f, limits, max_tokens), max_tokens, limits)
    end_ids_of(f, limits)  # range checks
    end_id = f.get("end_id") if f.given("end_id") else tokenizer.eos_token_id
    pad_id = f.get("pad_id") if f.given("pad_id") else _pad_id(tokenizer, end_id)
    return {"INPUT_ID": np.array([ids], np.int32),
            "REQUEST_INPUT_LEN": np.array([[len(ids)]], np.int32),
            "DECODER_INPUT_ID": np.zeros((1, 0), np.int32),
            "REQUEST_DECODER_INPUT_LEN": np.zeros((1, 1), np.int32),
            "BAD_WORDS_IDS": to_word_lists(word_ids(f.get("bad_words") or [], tokenizer)),
            "STOP_WORDS_IDS": to_word_lists(word_ids(f.get("stop_words") or [], tokenizer)),
            "EMBEDDING_BIAS": np.zeros((1, 0), np.float32),
            "REQUEST_OUTPUT_LEN": np.array([[max_tokens]], np.int32),
            "OUT_END_ID": np.array([[end_id]], np.int32),
            "OUT_PAD_ID": np.array([[pad_id]], np.int32)}


def postprocess(f: Fields, tokenizer: Step3Tokenizer, limits: Limits,
                skip_special_tokens: bool) -> dict[str, np.ndarray]:
    tokens, lengths = f.get("tokens"), f.get("lengths")
    if tokens.dtype.kind not in "iu" or tokens.ndim < 2:
        raise BadRequest(f"TOKENS_BATCH must be integer token ids [1, beams, L], got "
                         f"{tokens.dtype} {list(tokens.shape)}")
    beams = tokens.reshape(-1, tokens.shape[-1])  # [beams, L]
    lengths = lengths.reshape(-1)
    if lengths.size != beams.shape[0]:
        raise BadRequest(f"SEQUENCE_LENGTH holds {lengths.size} lengths for "
                         f"{beams.shape[0]} beams of TOKENS_BATCH")
    texts = []
    for beam, length in zip(beams, lengths.tolist()):
        if not 0 <= length <= beam.size:
            raise BadRequest(f"SEQUENCE_LENGTH must be in [0, {beam.size}], got {length}")
        ids = beam[:length].tolist()
        check_ids(f, "tokens", ids, limits)
        texts.append(tokenizer.decode(ids, skip_special_tokens=skip_special_tokens).encode())
    passed = {"OUT_CUM_LOG_PROBS": ("cum_log_probs", (1, 1)),
              "OUT_OUTPUT_LOG_PROBS": ("output_log_probs", (1, 1, 1)),
              "OUT_CONTEXT_LOGITS": ("context_logits", (1, 1, 1)),
              "OUT_GENERATION_LOGITS": ("generation_logits", (1, 1, 1, 1))}
    out = {"OUTPUT": np.array(texts, dtype=object)}
    for name, (field, zeros) in passed.items():
        value = f.get(field)
        out[name] = np.zeros(zeros, np.float32) if value is None else value.astype(np.float32)
    index = f.get("batch_index")
    out["OUT_BATCH_INDEX"] = np.zeros((1, 1), np.int32) if index is None else \
        index.astype(np.int32)
    return out


def _pad_id(tokenizer: Step3Tokenizer, end_id: int) -> int:
    """The tokenizer's pad token, or its end token when it has none (as TensorRT-LLM's
    preprocessing falls back)."""
    pad = tokenizer.token_id(tokenizer.special_tokens.get("pad_token"))
    return end_id if pad is None else pad
