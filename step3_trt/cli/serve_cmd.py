"""`step3-trt serve`: Triton Inference Server with the AFD job behind it."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve engines with Triton (HTTP, gRPC, streaming)",
                       description="Start tritonserver (bundled with nvidia-pytriton) on the "
                                   "triton_repo model `step3` with an AFD job (coordinator, "
                                   "attention and FFN ranks under mpiexec) behind it. Waits until "
                                   "the server is ready; SIGINT/SIGTERM stop everything. If the "
                                   "job fails, requests in flight get errors, the server reports "
                                   "not ready, and the job is restarted; if tritonserver dies, "
                                   "it is restarted. Triton's model-repository, shared-memory, "
                                   "logging and trace APIs are locked with a key only serve "
                                   "holds.")
    p.add_argument("--engines", type=Path, required=True, help="engine directory from `build`")
    p.add_argument("--host", default="127.0.0.1",
                   help="address for HTTP, gRPC and metrics (default: 127.0.0.1, local only)")
    p.add_argument("--http-port", type=int, default=8000, help="default: 8000")
    p.add_argument("--grpc-port", type=int, default=8001, help="default: 8001")
    p.add_argument("--metrics-port", type=int, default=8002, help="default: 8002")
    add_openai_arguments(p)
    p.add_argument("--run-dir", type=Path, default=None,
                   help="logs, the rendered model repository and rank pid files (default: a "
                        "temp dir)")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds any rank waits for a peer before failing the job (default: 60)")
    p.add_argument("--startup-timeout", type=float, default=600.0,
                   help="seconds to wait for the server and the job to be ready (default: 600)")
    p.add_argument("--heartbeat-timeout", type=float, default=5.0,
                   help="seconds without a heartbeat from the job's coordinator (it sends one "
                        "every 0.5 s) before requests in flight fail, the server reports not "
                        "ready and the job is restarted (default: 5)")
    p.add_argument("--max-restarts", type=int, default=3,
                   help="restarts of a failed AFD job or of a dead tritonserver, together, "
                        "before serve gives up and exits 1 (default: 3)")
    p.add_argument("--micro-batches", type=int, default=None,
                   help="decode micro-batches in flight (default: the build config's)")
    p.add_argument("--device", default=None, help="device (default: the build config's)")
    p.add_argument("--transport", choices=["mpi", "torch"], default=None,
                   help="the AFD job's data plane (default: the build config's runtime.transport)")
    p.add_argument("--shared-network", action="store_true",
                   help="run the AFD job in the host's network namespace instead of one of its "
                        "own (mpiexec's out-of-band port then listens on every interface)")
    p.add_argument("--no-prefix-caching", action="store_true",
                   help="never share KV blocks across requests with a common prefix (default: "
                        "the build config's kv_cache.prefix_caching, on unless it says false)")
    p.add_argument("--model-repository", type=Path, default=None,
                   help="Triton model repository holding `step3` (default: triton_repo/)")
    p.set_defaults(run=run)


def add_openai_arguments(p) -> None:
    p.add_argument("--openai-port", type=int, default=None,
                   help="also serve an OpenAI-compatible API (/v1/chat/completions, "
                        "/v1/completions, /v1/models) on this port of --host, in front of the "
                        "same AFD job; supervised and restarted like tritonserver (default: "
                        "none)")


def check_openai_port(args) -> None:
    taken = {args.http_port, args.grpc_port, args.metrics_port}
    if args.openai_port is not None and args.openai_port in taken:
        raise ValueError(f"--openai-port {args.openai_port} is also tritonserver's HTTP, gRPC or "
                         f"metrics port")


def run(args) -> int:
    from step3_trt.serve.supervisor import DEFAULT_REPOSITORY, ServeOptions, Supervisor
    from step3_trt.serve.tritonserver import Endpoints

    if not (args.engines / "manifest.json").is_file():
        raise FileNotFoundError(f"{args.engines} is not an engine directory (no manifest.json)")
    check_openai_port(args)
    if args.max_restarts < 0:
        raise ValueError(f"--max-restarts must be >= 0, got {args.max_restarts}")
    if not args.heartbeat_timeout >= 1.0:
        raise ValueError(f"--heartbeat-timeout must be at least 1 s (the coordinator sends a "
                         f"heartbeat every 0.5 s), got {args.heartbeat_timeout:g}")
    options = ServeOptions(
        engines=args.engines,
        endpoints=Endpoints(args.host, args.http_port, args.grpc_port, args.metrics_port),
        run_dir=args.run_dir, repository=args.model_repository or DEFAULT_REPOSITORY,
        timeout_s=args.timeout, startup_timeout_s=args.startup_timeout,
        heartbeat_timeout_s=args.heartbeat_timeout,
        max_restarts=args.max_restarts, micro_batches=args.micro_batches, device=args.device,
        transport=args.transport, shared_network=args.shared_network,
        openai_port=args.openai_port, prefix_caching=not args.no_prefix_caching)
    return Supervisor(options).run()
