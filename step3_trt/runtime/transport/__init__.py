"""Transports of an AFD job: a control channel (typed messages) and a data plane (per-layer
activations) behind the interfaces in `base`. The build config's `runtime.transport` names the
job's data plane (`mpi` or `torch`); `step3-trt run/serve --transport` overrides it. `inproc`
(queues between threads) implements both planes for the unit tests."""

from step3_trt.runtime.transport.base import (AfdError, Backoff, ControlChannel, DataPlane,  # noqa: F401
                                              Deadline, Handle, Slot)

JOB_TRANSPORTS = ("mpi", "torch")  # data planes an mpiexec job can use
