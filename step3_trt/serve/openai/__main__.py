"""`python -m step3_trt.serve.openai`: the OpenAI server process that `step3-trt serve
--openai-port` starts and supervises (serve/openai/process.py builds its command line)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from step3_trt.serve.openai.app import create_app
from step3_trt.serve.openai.http_server import serve
from step3_trt.serve.openai.model import ServedModel
from step3_trt.serve.openai.server import JobSettings, OpenAIServer


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m step3_trt.serve.openai",
                                description="OpenAI-compatible HTTP server in front of a "
                                            "running AFD job (started by `step3-trt serve "
                                            "--openai-port`)")
    p.add_argument("--engines", type=Path, required=True, help="the job's engine directory")
    p.add_argument("--endpoint", required=True, help="the job coordinator's ZeroMQ endpoint")
    p.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1, local only")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model-name", default="step3", help="the `model` clients name")
    p.add_argument("--startup-timeout", type=float, default=600.0,
                   help="seconds to wait for the job at start-up")
    p.add_argument("--heartbeat-timeout", type=float, default=5.0,
                   help="seconds without a heartbeat before the job counts as gone")
    args = p.parse_args(argv)
    model = ServedModel.load(args.engines, args.model_name)
    server = OpenAIServer(model, JobSettings(args.endpoint, args.startup_timeout,
                                             args.heartbeat_timeout))
    return serve(create_app(server), args.host, args.port, server.stop)


if __name__ == "__main__":
    sys.exit(main())
