"""The benchmark's prompts: equal-length token windows of held-out text that run the full length.

Every path must compute the same number of decode steps. vLLM is told `ignore_eos`; this
project's CLIs stop at end-of-sequence and have no such flag, so the prompts are screened with the
project's float32 reference model (`step3-trt generate --checkpoint`): only prompts whose greedy
continuation has `new_tokens` tokens without end-of-sequence are kept.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from perf.peer.paths import reference_outputs


def candidate_prompts(checkpoint: Path, text_file: Path, prompt_len: int,
                      count: int) -> list[list[int]]:
    """`count` distinct prompts [BOS, prompt_len - 1 tokens] from non-overlapping windows."""
    tokenizer = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    bos = tokenizer.token_to_id("<｜begin▁of▁sentence｜>")
    if bos is None:
        raise ValueError(f"{checkpoint}/tokenizer.json has no begin-of-sentence token")
    ids = tokenizer.encode(text_file.read_text(), add_special_tokens=False).ids
    body = prompt_len - 1
    windows = [ids[s:s + body] for s in range(0, len(ids) - body + 1, body)]
    unique = list(dict.fromkeys(tuple(w) for w in windows))
    if len(unique) < count:
        raise ValueError(f"{text_file} gives {len(unique)} distinct {prompt_len}-token prompts, "
                         f"{count} needed")
    step = len(unique) // count  # spread over the whole text
    return [[bos, *unique[i * step]] for i in range(count)]


def full_length_prompts(checkpoint: Path, text_file: Path, prompt_len: int, new_tokens: int,
                        count: int, eos_token_id: int,
                        threads: int | None = None) -> tuple[list[list[int]], dict]:
    """The first `count` candidates whose reference continuation runs `new_tokens` tokens.

    Returns the prompts and the reference's outputs for them (prompt tuple -> output ids).
    """
    candidates = candidate_prompts(checkpoint, text_file, prompt_len, count + count // 4)
    outputs = reference_outputs(checkpoint, candidates, new_tokens, threads)
    kept = [p for p in candidates
            if len(outputs[tuple(p)]) == new_tokens and eos_token_id not in outputs[tuple(p)]]
    if len(kept) < count:
        raise ValueError(f"only {len(kept)} of {len(candidates)} prompts run {new_tokens} tokens "
                         f"without end-of-sequence; {count} needed")
    kept = kept[:count]
    return kept, {tuple(p): outputs[tuple(p)] for p in kept}
