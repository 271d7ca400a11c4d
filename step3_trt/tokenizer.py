"""Hugging Face tokenizer files (`tokenizer.json` + `tokenizer_config.json`), loaded offline."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

# DeepSeek-V3 special tokens (Step-3 uses its tokenizer); note the full-width bars.
BOS, EOS, PAD = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"


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
    tokenizer: Tokenizer
    bos_token: str | None = BOS
    eos_token: str | None = EOS
    add_bos_token: bool = True

    @classmethod
    def from_dir(cls, path: str | Path) -> "Step3Tokenizer":
        path = Path(path)
        file = path / "tokenizer.json"
        if not file.is_file():
            raise FileNotFoundError(f"no tokenizer.json in {path}")
        meta = {}
        if (path / "tokenizer_config.json").is_file():
            meta = json.loads((path / "tokenizer_config.json").read_text())
        return cls(Tokenizer.from_file(str(file)), _token_str(meta.get("bos_token", BOS)),
                   _token_str(meta.get("eos_token", EOS)), bool(meta.get("add_bos_token", True)))

    @property
    def bos_token_id(self) -> int | None:
        return self.tokenizer.token_to_id(self.bos_token) if self.bos_token else None

    @property
    def eos_token_id(self) -> int | None:
        return self.tokenizer.token_to_id(self.eos_token) if self.eos_token else None

    def encode(self, text: str) -> list[int]:
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        if self.add_bos_token and self.bos_token_id is not None:
            ids = [self.bos_token_id, *ids]
        return ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def save(self, out_dir: str | Path) -> None:
        out = Path(out_dir)
        self.tokenizer.save(str(out / "tokenizer.json"))
        specials = {"bos_token": self.bos_token, "eos_token": self.eos_token, "pad_token": PAD}
        (out / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": self.add_bos_token,
                  "add_eos_token": False, "model_max_length": 65536, **specials}
        (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def _token_str(value) -> str | None:
    """tokenizer_config.json stores special tokens as strings or as AddedToken dicts."""
    return value.get("content") if isinstance(value, dict) else value


def byte_level_tokenizer() -> Step3Tokenizer:
    """256 byte tokens (ids 0-255) and BOS/EOS/PAD (256-258): encodes any text, no training."""
    vocab = {ch: b for b, ch in byte_to_unicode().items()}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True) for t in (BOS, EOS, PAD)])
    return Step3Tokenizer(tok)


def load_tokenizer(artifact_dir: str | Path) -> Step3Tokenizer | None:
    """The tokenizer of an engine or role-checkpoint directory (`<dir>/tokenizer/`) or of a
    checkpoint directory; None if it has none."""
    for d in (Path(artifact_dir) / "tokenizer", Path(artifact_dir)):
        if (d / "tokenizer.json").is_file():
            return Step3Tokenizer.from_dir(d)
    return None
