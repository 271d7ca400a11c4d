"""Perplexity evaluation: window framing, agreement with a direct computation, the CLI."""

from __future__ import annotations

import json
import math

import torch
import torch.nn.functional as F

from step3_trt.checkpoint.reader import CheckpointReader
from step3_trt.model.load import load_reference_model
from step3_trt.tokenizer import Step3Tokenizer
from step3_trt.tools.perplexity import IGNORE, evaluate, main, windows

TEXT = "Return the sum of the values.\n\nRaise ValueError if the list is empty. " * 3


def test_windows_score_every_token_once():
    ids = list(range(10, 33))  # 23 tokens
    inputs, targets = windows(ids, seq_len=8, bos_id=1, pad_id=0)
    assert inputs.shape == targets.shape == (3, 8)
    scored = targets[targets != IGNORE].tolist()
    assert scored == ids
    assert inputs[:, 0].tolist() == [1, 1, 1]
    assert inputs[0, 1:].tolist() == ids[:7]  # each input is the target shifted right
    assert targets[2, 7].item() == IGNORE  # the short last window is padded, not scored
    assert windows(ids, 8, 1, 0, max_windows=2)[0].shape == (2, 8)


def test_evaluate_matches_direct_cross_entropy(tiny_checkpoint):
    model = load_reference_model(CheckpointReader(tiny_checkpoint))
    tok = Step3Tokenizer.from_dir(tiny_checkpoint)
    ids = tok.tokenizer.encode(TEXT, add_special_tokens=False).ids
    assert len(ids) < 512
    result = evaluate(model, tok, TEXT, seq_len=512)
    logits = model(torch.tensor([[tok.bos_token_id, *ids[:-1]]]))[0]
    direct = F.cross_entropy(logits, torch.tensor(ids)).item()
    assert result.tokens == len(ids)
    assert result.bytes == len(TEXT.encode())
    assert math.isclose(result.nll, direct, rel_tol=1e-4)
    assert math.isclose(result.perplexity, math.exp(direct), rel_tol=1e-3)
    # Batching and window count do not change the per-token score of a fixed framing.
    a = evaluate(model, tok, TEXT, seq_len=16, batch_size=1)
    b = evaluate(model, tok, TEXT, seq_len=16, batch_size=5)
    assert math.isclose(a.nll, b.nll, rel_tol=1e-5) and a.tokens == b.tokens == len(ids)


def test_cli_json(tiny_checkpoint, tmp_path, capsys):
    data = tmp_path / "text.txt"
    data.write_text(TEXT)
    assert main(["--checkpoint", str(tiny_checkpoint), "--data", str(data), "--seq-len", "32",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tokens"] > 0 and out["perplexity"] > 1
    assert main(["--checkpoint", str(tiny_checkpoint), "--data", str(tmp_path / "none")]) == 2
