"""`step3-trt`: one verb per pipeline stage."""

from __future__ import annotations

import argparse
import sys

from step3_trt.build_config import BuildConfigError
from step3_trt.checkpoint.safetensors_header import CheckpointError
from step3_trt.cli import (build_cmd, convert_cmd, eval_cmd, generate_cmd, inspect_cmd,
                           make_checkpoint_cmd, quantize_cmd, run_cmd, serve_cmd)
from step3_trt.config import ConfigError
from step3_trt.manifest import ArtifactError

COMMANDS = (inspect_cmd, quantize_cmd, convert_cmd, build_cmd, generate_cmd, run_cmd,
            serve_cmd, make_checkpoint_cmd, eval_cmd)
# Errors that are the user's input, reported as one line without a traceback.
USER_ERRORS = (ConfigError, CheckpointError, BuildConfigError, ArtifactError, ValueError, FileNotFoundError, FileExistsError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="step3-trt",
        description="Deploy StepFun Step-3: inspect and convert checkpoints, build role engines, "
                    "run Attention-FFN disaggregated inference, serve it behind Triton.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in COMMANDS:
        cmd.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except USER_ERRORS as e:
        print(f"step3-trt {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"step3-trt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
