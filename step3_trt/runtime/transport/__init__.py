"""Transports of an AFD job: a control channel (typed messages) and a data plane (per-layer
activations) behind the interfaces in `base`. The build config's `runtime.transport` names the
data plane (`mpi`, `torch`, `inproc`); `step3-trt run/serve --transport` overrides it."""

from step3_trt.runtime.transport.base import (AfdError, Backoff, ControlChannel, DataPlane,  # noqa: F401
                                              Deadline, Handle, Slot)

TRANSPORTS = ("mpi", "torch", "inproc")
