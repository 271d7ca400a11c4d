"""Train the bundled Step-3-architecture model end to end, offline and deterministically.

    python -m step3_trt.tools.train --out models/step3-tiny --overwrite [--seed 0] [--minutes N]

Steps: build the stdlib-docstring corpus and its train / held-out / calibration split
(`corpus.py`), write the held-out and calibration texts to `--data-dir`, train a byte-level BPE
tokenizer on the training split, train `Step3ForCausalLM` with the `STDLIB_TINY` config
(`trainer.py`), write the checkpoint in the released layout (VLM config.json, tokenizer, sharded
safetensors, a random tiny vision tower) and `TRAINING.json`, then score the written checkpoint on
the held-out text (`perplexity.py`). With the same seed, thread count and library versions the
result is the same; `--minutes` caps the training loop's wall time (a run stopped by it is
recorded as such and is not reproducible step for step).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

# Idle OpenMP threads sleep instead of spinning: on a shared 2-core machine spinning threads make
# each step several times slower. Numerics are unaffected. (Only effective before torch starts.)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from step3_trt.presets import STDLIB_TINY, VISION_PRESETS  # noqa: E402
from step3_trt.tools.corpus import DESCRIPTION, Splits, build_splits  # noqa: E402

SAMPLE_PROMPT = "Return a new list containing"


def build_parser() -> argparse.ArgumentParser:
    from step3_trt.tools.trainer import TrainSettings

    d = TrainSettings()
    p = argparse.ArgumentParser(
        prog="python -m step3_trt.tools.train",
        description="Train the small Step-3-architecture model on Python's own documentation "
                    "(offline, CPU, deterministic from --seed) and write it as a checkpoint.")
    p.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--data-dir", type=Path, default=Path("data"),
                   help="where heldout.txt and calib.txt are written (default: data)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"default {d.seed}")
    p.add_argument("--steps", type=int, default=d.steps, help=f"AdamW steps (default {d.steps})")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"windows per step (default {d.batch_size})")
    p.add_argument("--seq-len", type=int, default=d.seq_len,
                   help=f"tokens per window (default {d.seq_len})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default {d.lr})")
    p.add_argument("--minutes", type=float, default=None,
                   help="stop the training loop after this many minutes (default: no cap)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--eval-every", type=int, default=100,
                   help="score 16 held-out windows every N steps (default 100; 0 = never)")
    p.add_argument("--eval-windows", type=int, default=None,
                   help="score only the first N windows of heldout/calib at the end (default all)")
    p.add_argument("--config", type=json.loads, default=None, metavar="JSON",
                   help="override fields of the STDLIB_TINY text config (for tests), e.g. "
                        "'{\"hidden_size\": 64}'")
    return p


def vision_tensors(text_cfg: dict[str, Any], dtype: torch.dtype,
                   seed: int) -> list[tuple[str, torch.Tensor]]:
    """The bundled model's random (untrained) vision tower: the tiny preset's, in the released
    layout, projecting to the text model's width."""
    from step3_trt.make_checkpoint import random_vision_tensors
    from step3_trt.presets import vlm_config
    from step3_trt.vision.config import VisionConfig

    cfg = VisionConfig.from_dict(vlm_config(text_cfg, VISION_PRESETS["stdlib-tiny"]))
    return random_vision_tensors(cfg, torch.Generator().manual_seed(seed), dtype)


def sample_completion(checkpoint: Path, prompt: str, max_new_tokens: int = 40) -> str:
    """Greedy continuation of `prompt` by the checkpoint's reference model (float32)."""
    from step3_trt.checkpoint.reader import CheckpointReader
    from step3_trt.model.generate import generate
    from step3_trt.model.load import load_reference_model
    from step3_trt.sampling import SamplingParams
    from step3_trt.tokenizer import Step3Tokenizer

    reader = CheckpointReader(checkpoint)
    tok = Step3Tokenizer.from_dir(checkpoint)
    model = load_reference_model(reader, dtype="float32")
    out = generate(model, [tok.encode(prompt)], SamplingParams(max_new_tokens, greedy=True),
                   eos_token_id=reader.config.eos_token_id)[0]
    return tok.decode(out)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole run (under the thread and determinism settings `main` applies); returns the
    TRAINING.json record."""
    from tqdm import tqdm

    from step3_trt.config import Step3Config
    from step3_trt.checkpoint.layout import text_specs
    from step3_trt.make_checkpoint import write_checkpoint
    from step3_trt.model.load import DTYPES
    from step3_trt.model.reference import Step3ForCausalLM
    from step3_trt.tools.bpe import train_bpe
    from step3_trt.tools.perplexity import evaluate, evaluate_checkpoint
    from step3_trt.tools.trainer import TrainSettings, init_weights, train

    t0 = time.monotonic()
    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} already exists (pass --overwrite to replace it)")
    torch.manual_seed(args.seed)
    text_cfg = {**STDLIB_TINY, **(args.config or {})}
    cfg = Step3Config.from_dict({**text_cfg, "torch_dtype": "float32"})
    settings = TrainSettings(seed=args.seed, steps=args.steps, batch_size=args.batch_size,
                             seq_len=args.seq_len, lr=args.lr)

    splits = build_splits()
    texts = {name: Splits.join(getattr(splits, name)) for name in ("train", "heldout", "calib")}
    args.data_dir.mkdir(parents=True, exist_ok=True)
    for name in ("heldout", "calib"):
        (args.data_dir / f"{name}.txt").write_text(texts[name], encoding="utf-8")
    tokenizer = train_bpe([d.text for d in splits.train], cfg.vocab_size)
    ids = torch.tensor(tokenizer.encode(texts["train"], add_special_tokens=False),
                       dtype=torch.int64)
    t_tok = time.monotonic() - t0

    model = Step3ForCausalLM(cfg)
    init_weights(model, settings.init_std, torch.Generator().manual_seed(args.seed))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"corpus: {len(ids)} training tokens; model: {n_params / 1e6:.2f}M parameters; "
          f"{settings.steps} steps of {settings.batch_size}x{settings.seq_len} tokens",
          file=sys.stderr)
    curve: list[dict[str, float]] = []
    bar = tqdm(total=settings.steps, desc="train", unit="step", dynamic_ncols=True)

    def on_step(step: int, loss: float, lr: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}")
        if args.eval_every and ((step + 1) % args.eval_every == 0 or step + 1 == settings.steps):
            ppl = evaluate(model, tokenizer, texts["heldout"], settings.seq_len, max_windows=16)
            curve.append({"step": step + 1, "train_loss": round(loss, 4),
                          "heldout16_ppl": round(ppl.perplexity, 3)})
            bar.write(f"step {step + 1}: train loss {loss:.3f}, held-out ppl (16 windows) "
                      f"{ppl.perplexity:.2f}")

    deadline = None if args.minutes is None else time.monotonic() + args.minutes * 60
    result = train(model, ids, tokenizer.bos_token_id, settings, deadline, on_step)
    bar.close()

    dtype = DTYPES[text_cfg["torch_dtype"]]
    state = model.state_dict()
    tensors = [(s.name, state[s.name].to(dtype)) for s in text_specs(cfg)]
    nbytes = sum(t.numel() * t.element_size() for _, t in tensors)
    write_checkpoint(args.out, text_cfg, tensors, tokenizer, shards_bytes=max(nbytes // 4, 1),
                     extra_tensors=vision_tensors(text_cfg, dtype, args.seed),
                     overwrite=True, vision=VISION_PRESETS["stdlib-tiny"])
    heldout, calib = (evaluate_checkpoint(args.out, args.data_dir / f"{name}.txt", settings.seq_len,
                                          batch_size=16, max_windows=args.eval_windows)
                      for name in ("heldout", "calib"))
    completion = sample_completion(args.out, SAMPLE_PROMPT)
    tail = result.losses[-20:]
    record = {
        "command": "python -m step3_trt.tools.train " + shlex.join(args.argv),
        "seed": args.seed, "threads": args.threads,
        "steps_planned": settings.steps, "steps_done": result.steps_done,
        "stopped_early": result.stopped_early,
        "settings": {k: v for k, v in vars(settings).items()},
        "wall_seconds": {"corpus_and_tokenizer": round(t_tok, 1),
                         "training": round(result.seconds, 1),
                         "total": round(time.monotonic() - t0, 1)},
        "final_train_loss": round(result.losses[-1], 4) if result.losses else None,
        "final_train_loss_mean20": round(sum(tail) / len(tail), 4) if tail else None,
        "heldout": {"file": str(args.data_dir / "heldout.txt"), **vars(heldout)},
        "calib": {"file": str(args.data_dir / "calib.txt"), **vars(calib)},
        "uniform_perplexity": cfg.vocab_size,
        "heldout_curve": curve,
        "expert_load_last_step": result.expert_load,
        "sample": {"prompt": SAMPLE_PROMPT, "greedy_completion": completion},
        "parameters": n_params, "checkpoint_dtype": text_cfg["torch_dtype"],
        "text_tensor_bytes": nbytes,
        "corpus": {"description": DESCRIPTION, "tokens_train": len(ids),
                   **{f"{k}_documents": len(getattr(splits, k)) for k in texts},
                   **{f"{k}_chars": len(v) for k, v in texts.items()}},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "tokenizers": __import__("tokenizers").__version__},
        "config": text_cfg,
    }
    (args.out / "TRAINING.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}: held-out {heldout.summary()}", file=sys.stderr)
    print(f"sample: {SAMPLE_PROMPT!r} -> {completion!r}", file=sys.stderr)
    return record


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv
    # Process-wide torch settings for the run, restored afterwards (main may be called in-process).
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    try:
        run(args)
    except (ValueError, FileExistsError) as e:
        print(f"train: error: {e}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    return 0


if __name__ == "__main__":
    sys.exit(main())
