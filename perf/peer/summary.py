"""Per-path figures of the side-by-side benchmark and its Markdown table.

A run is {"prompt_set", "max_tokens", "repeat", "wall_s", "generation_s"}; each repeat has a
run with 1 and one with `new_tokens` output tokens per prompt, so
    decode step = (generation(new_tokens) - generation(1)) / (new_tokens - 1)
    output tokens/s = prompts * new_tokens / generation(new_tokens)
"""

from __future__ import annotations

from statistics import mean


def set_figures(runs: list[dict], prompt_set: str, prompts: int, new_tokens: int) -> dict:
    """Figures per repeat (lists in repeat order) for one prompt set of one path."""
    def generation(max_tokens: int) -> list[float]:
        chosen = sorted((r for r in runs if r["prompt_set"] == prompt_set
                         and r["max_tokens"] == max_tokens), key=lambda r: r["repeat"])
        return [r["generation_s"] for r in chosen]

    full, one = generation(new_tokens), generation(1)
    if len(full) != len(one) or not full:
        raise ValueError(f"prompt set {prompt_set}: {len(full)} runs of {new_tokens} tokens, "
                         f"{len(one)} of 1 token")
    return {"prompts": prompts,
            "generation_s": full,
            "generation_1_token_s": one,
            "decode_step_ms": [(f - o) / (new_tokens - 1) * 1e3 for f, o in zip(full, one)],
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
