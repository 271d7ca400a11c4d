"""Per-path figures of the side-by-side benchmark and its Markdown table.

A run is {"prompt_set", "max_tokens", "repeat", "wall_s", "generation_s"}; each repeat has a
run with BASE_TOKENS and one with `new_tokens` output tokens per prompt, so
    decode step = (generation(new_tokens) - generation(BASE_TOKENS)) / (new_tokens - BASE_TOKENS)
    output tokens/s = prompts * new_tokens / generation(new_tokens)
The base run has the prefill and the first decode step, so one-time costs of a path's first
decode call count in its generation time but not in its decode step.
"""

from __future__ import annotations

from statistics import mean

BASE_TOKENS = 2


def set_figures(runs: list[dict], prompt_set: str, prompts: int, new_tokens: int) -> dict:
    """Figures per repeat (lists in repeat order) for one prompt set of one path."""
    def generation(max_tokens: int) -> list[float]:
        chosen = sorted((r for r in runs if r["prompt_set"] == prompt_set
                         and r["max_tokens"] == max_tokens), key=lambda r: r["repeat"])
        return [r["generation_s"] for r in chosen]

    full, base = generation(new_tokens), generation(BASE_TOKENS)
    if len(full) != len(base) or not full:
        raise ValueError(f"prompt set {prompt_set}: {len(full)} runs of {new_tokens} tokens, "
                         f"{len(base)} of {BASE_TOKENS}")
    return {"prompts": prompts,
            "generation_s": full,
            f"generation_{BASE_TOKENS}_tokens_s": base,
            "decode_step_ms": [(f - b) / (new_tokens - BASE_TOKENS) * 1e3
                               for f, b in zip(full, base)],
            "output_tokens_per_s": [prompts * new_tokens / f for f in full]}


def _pair(values: list[float], fmt: str) -> str:
    return " / ".join(format(v, fmt) for v in values)


def markdown_table(paths: dict[str, dict]) -> str:
    """One row per path and prompt set; each cell lists the repeats ('run 1 / run 2')."""
    lines = ["| path | prompts | start-up s | generation s | decode step ms | output tokens/s "
             "| tokens |",
             "|---|---|---|---|---|---|---|"]
    for name, path in paths.items():
        for figures in path["sets"].values():
            lines.append(
                f"| {name} | {figures['prompts']} | {mean(path['startup_s']):.1f} "
                f"| {_pair(figures['generation_s'], '.2f')} "
                f"| {_pair(figures['decode_step_ms'], '.1f')} "
                f"| {_pair(figures['output_tokens_per_s'], '.0f')} | {path['tokens']} |")
    return "\n".join(lines)
