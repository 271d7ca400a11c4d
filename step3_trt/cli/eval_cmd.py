"""`step3-trt eval`: accuracy of engines against the reference model of a checkpoint."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from step3_trt.config import CHECKPOINT_DTYPES, Step3Config
from step3_trt.evaluate import EvalResult, Thresholds

# Config fields that must agree for the two models' logits to be comparable.
ARCHITECTURE_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                       "num_attention_groups", "head_dim", "share_q_dim", "intermediate_size",
                       "moe_num_experts", "moe_top_k", "moe_intermediate_size", "share_expert_dim",
                       "moe_layers", "norm_expert_weight", "rms_norm_eps", "rope_theta")


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="accuracy of engines against the reference model",
                       description="Score held-out text with the engines and with the reference "
                                   "model of a checkpoint (plain PyTorch) in the same token "
                                   "windows: next-token top-1 agreement, mean KL(reference || "
                                   "engine) per token, and both perplexities with their ratio. "
                                   "Each window is [BOS] + its tokens; every token is scored "
                                   "once. Threshold flags make a failed metric exit with 1.")
    p.add_argument("--engines", type=Path, required=True, help="engine directory from `build`")
    p.add_argument("--reference", type=Path, required=True,
                   help="checkpoint whose reference model is the oracle (same architecture)")
    p.add_argument("--data", type=Path, required=True,
                   help="held-out text: a UTF-8 text file, or .jsonl with a \"text\" field per "
                        "line (records joined by blank lines); never the calibration text")
    p.add_argument("--max-tokens", type=int, default=4096,
                   help="tokens to score at most, in whole windows (default: 4096)")
    p.add_argument("--seq-len", type=int, default=256,
                   help="window length in tokens (default: 256)")
    p.add_argument("--dtype", default="float32", choices=["auto", *CHECKPOINT_DTYPES],
                   help="reference compute dtype (default: float32; auto = the checkpoint's)")
    p.add_argument("--min-top1", type=float, default=None,
                   help="fail (exit 1) if top-1 agreement is below this fraction")
    p.add_argument("--max-kl", type=float, default=None,
                   help="fail (exit 1) if the mean KL in nats per token is above this")
    p.add_argument("--max-ppl-ratio", type=float, default=None,
                   help="fail (exit 1) if ppl(engine) / ppl(reference) is above this")
    p.add_argument("--json", action="store_true", help="print one JSON object (no progress bar)")
    p.set_defaults(run=run)


@dataclass(frozen=True)
class EvalReport:
    result: EvalResult
    windows: int
    seq_len: int
    reference_digest: str
    engines_source_digest: str | None  # of the checkpoint the engines were converted from

    @property
    def digest_match(self) -> bool:
        """Same checkpoint_digest: same config and tensor layout (not a hash of the weights)."""
        return self.reference_digest == self.engines_source_digest

    def to_dict(self) -> dict:
        return {**self.result.to_dict(), "windows": self.windows, "seq_len": self.seq_len,
                "reference_digest": self.reference_digest,
                "engines_source_digest": self.engines_source_digest,
                "digest_match": self.digest_match}

    def text(self) -> str:
        source = "same config and layout as the engines' source" if self.digest_match else \
            f"engines converted from {self.engines_source_digest}"
        return (f"eval: {self.windows} windows of {self.seq_len} tokens; reference checkpoint "
                f"{self.reference_digest} ({source})\n" + self.result.table())


def read_data(path: Path) -> str:
    """A plain text file's text, or the "text" fields of a .jsonl file joined by blank lines."""
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"{path} line {number}: not valid JSON") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise ValueError(f"{path} line {number}: expected an object with a string "
                                 f"\"text\" field")
            records.append(record["text"])
        text = "\n\n".join(records)
    if not text.strip():
        raise ValueError(f"data file {path} is empty")
    return text


def check_same_architecture(engines: Step3Config, reference: Step3Config) -> None:
    diffs = [f"{name} {getattr(engines, name)} (engines) vs {getattr(reference, name)} (reference)"
             for name in ARCHITECTURE_FIELDS if getattr(engines, name) != getattr(reference, name)]
    if diffs:
        raise ValueError("engines and reference are different models: " + ", ".join(diffs))


def evaluate_engines(engines: Path, reference: Path, data: Path, max_tokens: int = 4096,
                     seq_len: int = 256, dtype: str = "float32",
                     progress: bool = False) -> EvalReport:
    """Score the windows of `data` with the engines and the reference; see `step3_trt.evaluate`."""
    import torch
    from tqdm import tqdm

    from step3_trt.checkpoint.reader import CheckpointReader, checkpoint_digest
    from step3_trt.evaluate import LogitStats, compare_logits, eval_windows
    from step3_trt.manifest import ENGINES, read_manifest
    from step3_trt.model.load import load_reference_model
    from step3_trt.runtime.local import LocalRunner
    from step3_trt.tokenizer import load_tokenizer

    text = read_data(data)
    manifest = read_manifest(engines, ENGINES)
    tokenizer = load_tokenizer(engines)
    if tokenizer is None or tokenizer.bos_token_id is None:
        raise ValueError(f"{engines} has no tokenizer with a BOS token to frame the windows")
    ids = tokenizer.tokenizer.encode(text, add_special_tokens=False).ids
    inputs, targets = eval_windows(ids, seq_len, max_tokens, tokenizer.bos_token_id)
    reader = CheckpointReader(reference)
    runner = LocalRunner(engines)
    check_same_architecture(runner.config, reader.config)
    limit = runner.build.runtime.max_seq_len or runner.config.max_position_embedding
    if seq_len >= limit:
        raise ValueError(f"--seq-len {seq_len} must be less than the engines' maximum sequence "
                         f"length {limit}")
    model = load_reference_model(reader, dtype=dtype, device=runner.device)
    per_step = runner.build.runtime.max_tokens_per_step // seq_len
    group = max(1, min(runner.build.runtime.max_batch, per_step))
    stats = LogitStats()
    with tqdm(total=len(inputs), desc="eval", unit="window", disable=not progress) as bar:
        for start in range(0, len(inputs), group):
            x, y = inputs[start:start + group], targets[start:start + group]
            engine_logits = runner.prompt_logits(x.tolist())
            with torch.no_grad():
                reference_logits = model(x.to(runner.device))
            for ref, eng, tgt in zip(reference_logits, engine_logits, y):
                stats += compare_logits(ref, eng, tgt)
            bar.update(len(x))
    return EvalReport(EvalResult.from_stats(stats), len(inputs), seq_len,
                      checkpoint_digest(reader), manifest.get("source", {}).get("digest"))


def run(args) -> int:
    thresholds = Thresholds(args.min_top1, args.max_kl, args.max_ppl_ratio)
    report = evaluate_engines(args.engines, args.reference, args.data, args.max_tokens,
                              args.seq_len, args.dtype, progress=not args.json)
    failures = thresholds.failures(report.result)
    if args.json:
        print(json.dumps({**report.to_dict(), "failures": failures}))
    else:
        print(report.text())
    for message in failures:
        print(f"step3-trt eval: FAILED: {message}", file=sys.stderr)
    return 1 if failures else 0
