"""Hugging Face tokenizer files (`tokenizer.json` + `tokenizer_config.json`), loaded offline.

Encodes and decodes as `transformers.AutoTokenizer` does on the same files (tests compare):
- what `encode` adds around the text (BOS) is `tokenizer.json`'s post-processor, as in
  transformers' fast tokenizer, which ignores tokenizer_config.json's `add_bos_token` /
  `add_eos_token` when a tokenizer.json exists (no post-processor: nothing is added);
- the named special tokens (`bos_token`, `eos_token`, ...) come from tokenizer_config.json, with
  special_tokens_map.json taking precedence when tokenizer_config.json has no
  `added_tokens_decoder` (transformers' legacy rule);
- the chat templates come from where transformers finds them (`chat.template`).
Decoding is `tokenizers`' own (transformers skips its clean-up pass for BPE models).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

from step3_trt.chat.template import STEP3_TEMPLATE, load_chat_templates
from step3_trt.chat.tokens import CHAT_TOKENS

# DeepSeek-V3 special tokens (Step-3 uses its tokenizer); note the full-width bars.
BOS, EOS, PAD = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"
# transformers' named special tokens (`SPECIAL_TOKENS_ATTRIBUTES`), visible to chat templates.
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token",
                       "cls_token", "mask_token")
# Bytes that never occur in UTF-8 text: their byte-level tokens can carry the chat delimiters.
NON_UTF8_BYTES = (0xC0, 0xC1, *range(0xF5, 0x100))


def byte_to_unicode() -> dict[int, str]:
    """GPT-2 byte-level alphabet: printable bytes map to themselves, the rest past U+0100."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@dataclass
class Step3Tokenizer:
    tokenizer: Tokenizer  # its post-processor decides what `encode` adds
    special_tokens: dict[str, str] = field(default_factory=lambda: {
        "bos_token": BOS, "eos_token": EOS, "pad_token": PAD})  # named, as in transformers
    chat_templates: dict[str, str] = field(default_factory=dict)  # name -> Jinja source

    @classmethod
    def from_dir(cls, path: str | Path) -> "Step3Tokenizer":
        path = Path(path)
        file = path / "tokenizer.json"
        if not file.is_file():
            raise FileNotFoundError(f"no tokenizer.json in {path}")
        meta = _read_json(path / "tokenizer_config.json")
        specials = {k: _token_str(meta[k]) for k in SPECIAL_TOKEN_NAMES if meta.get(k)}
        if "added_tokens_decoder" not in meta:
            legacy = _read_json(path / "special_tokens_map.json")
            specials.update({k: _token_str(legacy[k]) for k in SPECIAL_TOKEN_NAMES
                             if legacy.get(k)})
        return cls(Tokenizer.from_file(str(file)), specials, load_chat_templates(path))

    @property
    def bos_token(self) -> str | None:
        return self.special_tokens.get("bos_token")

    @property
    def eos_token(self) -> str | None:
        return self.special_tokens.get("eos_token")

    @property
    def bos_token_id(self) -> int | None:
        return self.token_id(self.bos_token)

    @property
    def eos_token_id(self) -> int | None:
        return self.token_id(self.eos_token)

    def token_id(self, token: str | None) -> int | None:
        """The id of `token` if it is one token of the vocabulary, else None."""
        return self.tokenizer.token_to_id(token) if token else None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`; with `add_special_tokens`, what the post-processor adds (BOS)."""
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids`. Special tokens are dropped by default; parsers that need the chat
        delimiters (tool calls, stop words such as `<|EOT|>`) pass skip_special_tokens=False."""
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def save(self, out_dir: str | Path) -> None:
        out = Path(out_dir)
        self.tokenizer.save(str(out / "tokenizer.json"))
        (out / "special_tokens_map.json").write_text(json.dumps(self.special_tokens, indent=2)
                                                     + "\n")
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": True,
                  "add_eos_token": False, "model_max_length": 65536, **self.special_tokens}
        if self.chat_templates:
            if set(self.chat_templates) == {"default"}:
                config["chat_template"] = self.chat_templates["default"]
            else:
                config["chat_template"] = [{"name": n, "template": t}
                                           for n, t in self.chat_templates.items()]
        (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return data


def _token_str(value) -> str | None:
    """tokenizer_config.json stores special tokens as strings or as AddedToken dicts."""
    return value.get("content") if isinstance(value, dict) else value


def bos_post_processor(tok: Tokenizer, bos: str = BOS) -> processors.TemplateProcessing:
    """The post-processor that puts BOS before every sequence (DeepSeek-V3's tokenizer.json
    has one like it)."""
    bos_id = tok.token_to_id(bos)
    if bos_id is None:
        raise ValueError(f"{bos!r} is not a token of this tokenizer")
    return processors.TemplateProcessing(single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                                         special_tokens=[(bos, bos_id)])


def map_chat_tokens(tok: Tokenizer) -> Tokenizer:
    """A byte-level BPE tokenizer with Step-3's chat delimiters (`chat.tokens.CHAT_TOKENS`) as
    single tokens, on the ids of byte tokens that UTF-8 text never produces (bytes 0xC0, 0xC1,
    0xF5-0xFF). The vocabulary size and the tokenization of any text without the delimiters
    are unchanged; docs/decisions.md says why."""
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    merged = {piece for merge in spec["model"]["merges"]
              for piece in (merge.split(" ") if isinstance(merge, str) else merge)}
    symbols = [byte_to_unicode()[b] for b in NON_UTF8_BYTES]
    if len(symbols) < len(CHAT_TOKENS):
        raise ValueError("not enough unused byte tokens for the chat delimiters")
    for (token, _), symbol in zip(CHAT_TOKENS, symbols):
        if token in vocab:
            raise ValueError(f"{token!r} is already a token")
        if symbol not in vocab or any(symbol in piece for piece in merged):
            raise ValueError(f"byte token {symbol!r} is missing or used by a merge")
        vocab[token] = vocab.pop(symbol)
    out = Tokenizer.from_str(json.dumps(spec))
    out.add_tokens([AddedToken(t, special=s, normalized=False) for t, s in CHAT_TOKENS if not s])
    out.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, s in CHAT_TOKENS if s])
    return out


def step3_byte_level(tok: Tokenizer) -> Step3Tokenizer:
    """A freshly built byte-level tokenizer (with BOS/EOS/PAD) given Step-3's conventions: the
    chat delimiters as tokens, BOS added by the post-processor, Step-3's chat template."""
    tok = map_chat_tokens(tok)
    tok.post_processor = bos_post_processor(tok)
    return Step3Tokenizer(tok, chat_templates={"default": STEP3_TEMPLATE})


def byte_level_tokenizer() -> Step3Tokenizer:
    """256 byte tokens (ids 0-255) and BOS/EOS/PAD (256-258): encodes any text, no training."""
    vocab = {ch: b for b, ch in byte_to_unicode().items()}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True) for t in (BOS, EOS, PAD)])
    return step3_byte_level(tok)


def load_tokenizer(artifact_dir: str | Path) -> Step3Tokenizer | None:
    """The tokenizer of an engine or role-checkpoint directory (`<dir>/tokenizer/`) or of a
    checkpoint directory; None if it has none."""
    for d in (Path(artifact_dir) / "tokenizer", Path(artifact_dir)):
        if (d / "tokenizer.json").is_file():
            return Step3Tokenizer.from_dir(d)
    return None
