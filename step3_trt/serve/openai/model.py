"""What the server knows of the model it serves, read once from the engine directory: its name,
tokenizer and chat format, the context and byte limits (serve/request.py's `Limits`, as the
Triton backend uses), the sampling defaults and stop ids of generation_config.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from step3_trt.build_config import BuildConfig
from step3_trt.chat.prompt import ChatFormat
from step3_trt.config import Step3Config
from step3_trt.generation_config import GenerationConfig
from step3_trt.runtime.local import max_seq_len
from step3_trt.serve.request import Limits
from step3_trt.tokenizer import Step3Tokenizer, load_tokenizer

# A JSON body can spell one byte of prompt text in at most 6 bytes (`\u0001`), so a body longer
# than 6 x the longest prompt that fits, plus room for the other fields, cannot fit either.
BODY_BYTES_PER_PROMPT_BYTE = 6
BODY_SLACK_BYTES = 64 * 1024


@dataclass(frozen=True)
class ServedModel:
    name: str  # what clients put in `model`
    tokenizer: Step3Tokenizer
    chat: ChatFormat | None  # None when the tokenizer has no chat template
    limits: Limits
    defaults: GenerationConfig
    vocab_size: int

    @classmethod
    def load(cls, engine_dir: Path, name: str) -> ServedModel:
        engine_dir = Path(engine_dir)
        tokenizer = load_tokenizer(engine_dir)
        if tokenizer is None:
            raise FileNotFoundError(f"{engine_dir} has no tokenizer (tokenizer/tokenizer.json)")
        meta = json.loads((engine_dir / "attention" / "rank0" / "engine.json").read_text())
        config = Step3Config.from_dict(meta["architecture"])
        build = BuildConfig.from_file(engine_dir / "build_config.yaml")
        chat = ChatFormat(tokenizer) if tokenizer.chat_templates else None
        return cls(name, tokenizer, chat, Limits.of(tokenizer, max_seq_len(config, build)),
                   GenerationConfig.from_dir(engine_dir, config), config.vocab_size)

    @property
    def max_body_bytes(self) -> int:
        return BODY_BYTES_PER_PROMPT_BYTE * self.limits.max_prompt_bytes(1) + BODY_SLACK_BYTES
