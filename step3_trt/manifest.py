"""Artifact manifests: every stage writes one and checks its input's before using it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from step3_trt.chat.template import TEMPLATE_FILE as CHAT_TEMPLATE_FILE
from step3_trt.generation_config import GENERATION_CONFIG_FILE

FORMAT_VERSION = 2  # 2: FFN placement P2 (replicated shared expert and dense MLPs, `ffn_shared`)
ROLE_CHECKPOINT = "step3-trt-role-checkpoints"
ENGINES = "step3-trt-engines"
# Files that travel with the tokenizer from a checkpoint into artifacts' `tokenizer/`.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   CHAT_TEMPLATE_FILE, GENERATION_CONFIG_FILE)


class ArtifactError(ValueError):
    """An artifact that is missing, incomplete, or was made for something else."""


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_manifest(directory: str | Path, kind: str) -> dict[str, Any]:
    """Read `manifest.json` of an artifact directory and check its kind and format version."""
    path = Path(directory) / "manifest.json"
    if not path.is_file():
        raise ArtifactError(f"{directory} is not a {kind} directory (no manifest.json)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise ArtifactError(f"{path} is not valid JSON") from None
    if manifest.get("format") != kind:
        raise ArtifactError(f"{directory} holds {manifest.get('format')!r}, expected {kind!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{directory} has format version {manifest.get('format_version')}, "
                            f"this step3-trt reads version {FORMAT_VERSION}; rebuild it")
    return manifest
