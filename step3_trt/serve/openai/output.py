"""A request's output token ids -> the text a client gets, in final pieces.

serve/detok.py's `TextStream` does the incremental part (a partial UTF-8 character and a tail
that could start a stop string are held back; text from a stop string on is never returned).
On top of it: the end-of-sequence ids (generation_config.json's union, `<|EOT|>` included)
end the output but are not text, and special tokens are kept in the text when a parser needs
them (Step-3's tool-call delimiters are special tokens; `decode` drops those by default).
"""

from __future__ import annotations

from step3_trt.sampling import SamplingParams
from step3_trt.serve.detok import TextStream
from step3_trt.serve.openai.model import ServedModel
from step3_trt.tokenizer import Step3Tokenizer


class _SpecialTokensKept:
    """The one method of a tokenizer that TextStream calls, decoding with special tokens kept."""

    def __init__(self, tokenizer: Step3Tokenizer):
        self.tokenizer = tokenizer

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)


class OutputText:
    def __init__(self, model: ServedModel, params: SamplingParams, keep_special_tokens: bool):
        tokenizer = _SpecialTokensKept(model.tokenizer) if keep_special_tokens else \
            model.tokenizer
        self.stream = TextStream(tokenizer, params)
        self.end_ids = frozenset(model.defaults.eos_token_ids)
        self.count = 0  # output tokens seen, end-of-sequence ids included

    def push(self, ids: list[int]) -> str:
        """New output tokens; returns the text that became final."""
        self.count += len(ids)
        return self.stream.push([t for t in ids if t not in self.end_ids])

    def finish(self, output_ids: list[int]) -> str:
        """The request's whole output, once it finished: the text not returned yet."""
        return self.push(output_ids[self.count:]) + self.stream.finish()
