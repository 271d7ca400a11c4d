"""The real `tritonserver` that the `nvidia-pytriton` wheel bundles (TOOLCHAIN.md): its binary,
the python backend, and the backend stub built for the running Python, assembled into a
backend directory; the command line and environment to run it on a model repository."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from step3_trt.serve.lockdown import AdminKey


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    python_backend: Path  # libtriton_python.so + triton_python_backend_utils.py
    stub: Path  # triton_python_backend_stub for this Python version
    libs: Path  # the wheel's bundled shared libraries (the stub's RPATH is relative to them)

    @classmethod
    def locate(cls) -> "TritonInstall":
        spec = importlib.util.find_spec("pytriton")
        if spec is None or spec.origin is None:
            raise FileNotFoundError("tritonserver not found: install nvidia-pytriton "
                                    "(`pip install nvidia-pytriton==0.7.0`)")
        root = Path(spec.origin).parent / "tritonserver"
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        install = cls(root / "bin" / "tritonserver", root / "backends" / "python",
                      root / "python_backend_stubs" / version / "triton_python_backend_stub",
                      Path(spec.origin).parents[1] / "nvidia_pytriton.libs")
        for path in (install.binary, install.python_backend, install.stub):
            if not path.exists():
                raise FileNotFoundError(f"the pytriton install lacks {path} (Python {version} "
                                        f"needs its own backend stub)")
        return install

    def backend_dir(self, dest: Path) -> Path:
        """A backend directory (`--backend-directory`) with the python backend and our stub."""
        python = dest / "python"
        if python.exists():
            shutil.rmtree(python)
        shutil.copytree(self.python_backend, python,
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(self.stub, python / "triton_python_backend_stub")
        return dest

    def env(self) -> dict[str, str]:
        """The server's environment: the stub finds this interpreter's libpython and the wheel's
        libraries, and (through PATH) this environment's Python and its packages."""
        env = dict(os.environ)
        libdirs = [sysconfig.get_config_var("LIBDIR") or "", str(self.libs),
                   env.get("LD_LIBRARY_PATH", "")]
        env["LD_LIBRARY_PATH"] = ":".join(d for d in libdirs if d)
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        return env


@dataclass(frozen=True)
class Endpoints:
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}"


def server_command(install: TritonInstall, repository: Path, backends: Path, ends: Endpoints,
                   models: list[str], exit_timeout_s: int, admin: AdminKey,
                   shm_prefix: str) -> list[str]:
    """`shm_prefix`: the name prefix of the python backend's /dev/shm regions (one per model
    instance), so that the regions of this server can be told from any other's."""
    loads = [arg for model in models for arg in ("--load-model", model)]
    return [str(install.binary), "--model-repository", str(repository),
            "--backend-directory", str(backends),
            f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
            "--model-control-mode", "explicit", *loads, *admin.server_args(),
            "--http-address", ends.host, "--http-port", str(ends.http_port),
            "--grpc-address", ends.host, "--grpc-port", str(ends.grpc_port),
            "--metrics-address", ends.host, "--metrics-port", str(ends.metrics_port),
            "--allow-metrics", "true", "--allow-gpu-metrics", "false",
            "--exit-timeout-secs", str(exit_timeout_s), "--log-verbose", "0"]


def render_repository(source: Path, dest: Path, models: dict[str, dict[str, str]],
                      template: dict[str, str] | None = None) -> Path:
    """Copy each of the model repository's `models` to `dest`, fill in the `${name}`
    placeholders of its config.pbtxt from `template` (as the TensorRT-LLM backend's
    fill_template.py does) and append its config parameters (the committed repository is never
    edited). A placeholder left unfilled is an error naming it."""
    for model in models:
        if not (source / model / "config.pbtxt").is_file():
            raise FileNotFoundError(f"{source / model} has no config.pbtxt")
    if dest.exists():
        shutil.rmtree(dest)
    for model, parameters in models.items():
        shutil.copytree(source / model, dest / model,
                        ignore=shutil.ignore_patterns("__pycache__"))
        config = dest / model / "config.pbtxt"
        text = config.read_text()
        for key, value in (template or {}).items():
            text = text.replace("${" + key + "}", value)
        if (left := re.search(r"\$\{(\w+)\}", text)) is not None:
            raise ValueError(f"{source / model / 'config.pbtxt'}: placeholder {left.group(0)} "
                             f"is not filled in (known: {', '.join(template or {}) or 'none'})")
        lines = [f'parameters {{ key: "{k}" value: {{ string_value: "{_quoted(v)}" }} }}'
                 for k, v in parameters.items()]
        config.write_text(text + "\n" + "\n".join(lines) + "\n")
    return dest


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
