"""Token-by-token comparison of two paths' greedy outputs (prompt tuple -> output ids)."""

from __future__ import annotations

Outputs = dict[tuple[int, ...], list[int]]


def truncated(outputs: Outputs, length: int) -> Outputs:
    return {p: o[:length] for p, o in outputs.items()}


def first_divergence(expected: Outputs, actual: Outputs) -> dict | None:
    """None when `actual` has exactly `expected`'s prompts and tokens; else the first difference.

    The difference names the prompt by its index in `expected` and the output position.
    """
    for index, (prompt, want) in enumerate(expected.items()):
        got = actual.get(prompt)
        if got is None:
            return {"prompt_index": index, "position": None, "problem": "no output"}
        for position, (w, g) in enumerate(zip(want, got)):
            if w != g:
                return {"prompt_index": index, "position": position, "expected": w, "got": g}
        if len(want) != len(got):
            return {"prompt_index": index, "position": min(len(want), len(got)),
                    "problem": f"{len(got)} tokens, expected {len(want)}"}
    extra = len(set(actual) - set(expected))
    if extra:
        return {"prompt_index": None, "position": None, "problem": f"{extra} unexpected prompts"}
    return None
