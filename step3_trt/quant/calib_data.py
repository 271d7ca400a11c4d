"""Calibration text -> token windows. Plain text, or JSONL with a "text" field per line."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from step3_trt.tokenizer import Step3Tokenizer


class CalibrationDataError(ValueError):
    """Calibration data that is missing, empty, malformed or too small."""


def read_documents(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise CalibrationDataError(f"calibration data {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CalibrationDataError(f"calibration data {path} is not UTF-8 text ({e.reason} at "
                                   f"byte {e.start})") from None
    if path.suffix == ".jsonl":
        docs = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise CalibrationDataError(f"{path}:{n}: not JSON ({e.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise CalibrationDataError(f"{path}:{n}: expected an object with a string "
                                           f"\"text\" field")
            docs.append(record["text"])
    else:
        docs = [text]
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise CalibrationDataError(f"calibration data {path} is empty")
    return docs


def calibration_windows(path: str | Path, tokenizer: Step3Tokenizer, num_sequences: int,
                        seq_len: int) -> torch.Tensor:
    """`num_sequences` non-overlapping windows of `seq_len` tokens [N, L] (int64), taken in order
    from the documents joined by the end-of-sequence token. Too little text is an error."""
    if num_sequences < 1 or seq_len < 2:
        raise CalibrationDataError(f"--calib-size must be >= 1 and --calib-seq-len >= 2, got "
                                   f"{num_sequences} and {seq_len}")
    sep = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    ids: list[int] = []
    for doc in read_documents(path):
        ids += tokenizer.encode(doc) + sep
    have = len(ids) // seq_len
    if have < num_sequences:
        raise CalibrationDataError(
            f"calibration data {path} gives {len(ids)} tokens = {have} windows of {seq_len}; "
            f"--calib-size {num_sequences} needs {num_sequences * seq_len} tokens (add text or "
            f"lower --calib-size / --calib-seq-len)")
    return torch.tensor(ids[:num_sequences * seq_len]).view(num_sequences, seq_len)
