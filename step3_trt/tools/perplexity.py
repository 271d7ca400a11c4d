"""Held-out perplexity of a Step-3 checkpoint (or an in-memory reference model) on a text file.

The text is tokenized whole (without special tokens) and cut into consecutive, non-overlapping
windows of `seq_len` tokens. Each window is scored by one cache-free forward pass over
`[BOS] + window[:-1]`, so every token of the text is predicted exactly once, from the tokens
before it in its window (at most `seq_len - 1` of them). This is the same framing the training
windows use. The last window may be shorter; nothing is padded into the score.

    python -m step3_trt.tools.perplexity --checkpoint models/step3-tiny --data data/heldout.txt
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from step3_trt.model.reference import Step3ForCausalLM
from step3_trt.tokenizer import Step3Tokenizer

IGNORE = -100  # cross-entropy target value that is not scored


@dataclass(frozen=True)
class PerplexityResult:
    tokens: int  # tokens scored
    bytes: int  # UTF-8 bytes of the scored text
    nll: float  # mean negative log-likelihood per token, nats
    perplexity: float  # exp(nll)
    bits_per_byte: float  # tokenizer-independent: total nll in bits / bytes

    def summary(self) -> str:
        return (f"perplexity {self.perplexity:.3f} over {self.tokens} tokens "
                f"(nll {self.nll:.4f} nats/token, {self.bits_per_byte:.4f} bits/byte)")


def windows(ids: list[int], seq_len: int, bos_id: int, pad_id: int,
            max_windows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets), both [W, seq_len] int64: inputs `[BOS] + w[:-1]`, targets `w`; the
    short last window is right-padded with `pad_id` inputs and IGNORE targets."""
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    starts = list(range(0, len(ids), seq_len))[:max_windows]
    inputs = torch.full((len(starts), seq_len), pad_id, dtype=torch.int64)
    targets = torch.full((len(starts), seq_len), IGNORE, dtype=torch.int64)
    for row, start in enumerate(starts):
        w = torch.tensor(ids[start:start + seq_len], dtype=torch.int64)
        targets[row, :len(w)] = w
        inputs[row, 0] = bos_id
        inputs[row, 1:len(w)] = w[:-1]
    return inputs, targets


@torch.no_grad()
def score(model: Step3ForCausalLM, inputs: torch.Tensor, targets: torch.Tensor,
          batch_size: int = 8, progress: bool = False) -> tuple[float, int]:
    """(total nll in nats, number of scored tokens) of `targets` given `inputs`."""
    from tqdm import tqdm

    device = next(model.parameters()).device
    total, count = 0.0, 0
    batches = range(0, inputs.shape[0], batch_size)
    for start in tqdm(batches, desc="perplexity", unit="batch", disable=not progress):
        x = inputs[start:start + batch_size].to(device)
        y = targets[start:start + batch_size].to(device)
        logits = model(x)
        total += float(F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(),
                                       ignore_index=IGNORE, reduction="sum"))
        count += int((y != IGNORE).sum())
    return total, count


def evaluate(model: Step3ForCausalLM, tokenizer: Step3Tokenizer, text: str, seq_len: int = 256,
             batch_size: int = 8, max_windows: int | None = None,
             progress: bool = False) -> PerplexityResult:
    """Perplexity of `model` on `text` (the first `max_windows` windows only, if given)."""
    ids = tokenizer.tokenizer.encode(text, add_special_tokens=False).ids
    if not ids:
        raise ValueError("the text is empty")
    bos = tokenizer.bos_token_id
    if bos is None:
        raise ValueError("the tokenizer has no BOS token")
    inputs, targets = windows(ids, seq_len, bos, pad_id=bos, max_windows=max_windows)
    was_training = model.training
    model.eval()
    try:
        total, count = score(model, inputs, targets, batch_size, progress)
    finally:
        model.train(was_training)
    scored = ids[:count]  # windows are consecutive from the start of the text
    nbytes = len(tokenizer.tokenizer.decode(scored, skip_special_tokens=False).encode())
    nll = total / count
    return PerplexityResult(tokens=count, bytes=nbytes, nll=nll, perplexity=math.exp(nll),
                            bits_per_byte=total / math.log(2) / max(nbytes, 1))


def evaluate_checkpoint(checkpoint: str | Path, data: str | Path, seq_len: int = 256,
                        batch_size: int = 8, max_windows: int | None = None,
                        dtype: str = "float32", progress: bool = False) -> PerplexityResult:
    """Load a checkpoint's reference model and tokenizer and evaluate it on the text file `data`."""
    from step3_trt.checkpoint.reader import CheckpointReader
    from step3_trt.model.load import load_reference_model

    model = load_reference_model(CheckpointReader(checkpoint), dtype=dtype)
    tokenizer = Step3Tokenizer.from_dir(checkpoint)
    text = Path(data).read_text(encoding="utf-8")
    return evaluate(model, tokenizer, text, seq_len, batch_size, max_windows, progress)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m step3_trt.tools.perplexity",
        description="Perplexity of a checkpoint's reference model on a UTF-8 text file, scored "
                    "in consecutive windows of --seq-len tokens (each window starts with BOS).")
    p.add_argument("--checkpoint", type=Path, required=True, help="checkpoint directory")
    p.add_argument("--data", type=Path, required=True, help="text file to score")
    p.add_argument("--seq-len", type=int, default=256, help="window length in tokens (default 256)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward (default 8)")
    p.add_argument("--max-windows", type=int, default=None,
                   help="score only the first N windows (default: the whole file)")
    p.add_argument("--dtype", default="float32", choices=["auto", "float32", "bfloat16"],
                   help="compute dtype (default float32; auto = the checkpoint's)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = evaluate_checkpoint(args.checkpoint, args.data, args.seq_len, args.batch_size,
                                     args.max_windows, args.dtype, progress=not args.json)
    except (ValueError, FileNotFoundError) as e:
        print(f"perplexity: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(result)) if args.json else result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
