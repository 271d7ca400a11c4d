"""Step-3's image placeholder tokens: what one image expands to in the prompt.

Windows come first, row-major, each `<patch_start>` + N x `<im_patch>` + `<patch_end>`, with
`<patch_newline>` after every row but the last; then the global view, `<im_start>` + M x
`<im_patch>` + `<im_end>`. Image embeddings replace the `<im_patch>` tokens in that order. The
expansion is kept as token strings with repeat counts, so any tokenizer can map it to ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from step3_trt.vision.errors import PlaceholderCountError

IMAGE_TOKEN = "<im_patch>"  # one per image embedding; the `image_token_id` of the config
IMAGE_START, IMAGE_END = "<im_start>", "<im_end>"
PATCH_START, PATCH_END, PATCH_NEWLINE = "<patch_start>", "<patch_end>", "<patch_newline>"
PLACEHOLDER_TOKENS = (IMAGE_TOKEN, IMAGE_START, IMAGE_END, PATCH_START, PATCH_END, PATCH_NEWLINE)


@dataclass(frozen=True)
class ImagePlaceholder:
    runs: tuple[tuple[str, int], ...]  # (token string, repeat count), in prompt order

    @property
    def num_tokens(self) -> int:
        return sum(count for _, count in self.runs)

    @property
    def num_embeddings(self) -> int:
        """`<im_patch>` tokens: the rows of this image's embeddings."""
        return sum(count for token, count in self.runs if token == IMAGE_TOKEN)

    @property
    def text(self) -> str:
        return "".join(token * count for token, count in self.runs)

    def token_ids(self, vocab: Mapping[str, int]) -> list[int]:
        """The expansion as ids; `vocab` maps each placeholder token string to its id."""
        missing = sorted({t for t, _ in self.runs if t not in vocab})
        if missing:
            raise ValueError(f"the tokenizer has no id for image placeholder token(s) "
                             f"{', '.join(missing)}")
        return [vocab[token] for token, count in self.runs for _ in range(count)]


def image_placeholder(newline_after: Sequence[bool], window_embeddings: int,
                      global_embeddings: int) -> ImagePlaceholder:
    """The expansion of one image with len(newline_after) windows (0: global view only)."""
    runs: list[tuple[str, int]] = []
    for newline in newline_after:
        runs += [(PATCH_START, 1), (IMAGE_TOKEN, window_embeddings), (PATCH_END, 1)]
        if newline:
            runs.append((PATCH_NEWLINE, 1))
    runs += [(IMAGE_START, 1), (IMAGE_TOKEN, global_embeddings), (IMAGE_END, 1)]
    return ImagePlaceholder(tuple(runs))


def expand_prompt(prompt: str, placeholders: Sequence[ImagePlaceholder]) -> str:
    """Replace the i-th `<im_patch>` of `prompt` (one per image, as a chat template writes it)
    by the i-th image's expansion."""
    parts = prompt.split(IMAGE_TOKEN)
    if len(parts) - 1 != len(placeholders):
        raise PlaceholderCountError(f"the prompt has {len(parts) - 1} image placeholder(s) "
                                    f"({IMAGE_TOKEN}) for {len(placeholders)} image(s)")
    out = [parts[0]]
    for placeholder, rest in zip(placeholders, parts[1:]):
        out += [placeholder.text, rest]
    return "".join(out)
