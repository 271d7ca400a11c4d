"""The runtime's transports as the model prices them (docs/afd-model.md §10.4).

``torch``: torch.distributed point-to-point with NCCL, device buffers: NVLink inside a host,
GPUDirect RDMA over the NIC between hosts. ``mpi``: mpi4py with host buffers: a device->host
copy, MPI (shared memory inside a host, UCX over the NIC between hosts), a host->device copy.

Each number says where it comes from; ``assumed`` ones are not measured here. The MPI
shared-memory path is the ping-pong measured by perf/afd/bench_mpi.py on this project's CPU
machine (perf/results/afd_model_mpi_xeon-2core.json), not on a GPU host.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from .checks import AfdInputError, nonnegative, positive
from .interp import interp1

RESULTS = Path(__file__).resolve().parents[1] / "results"
MPI_SHM = RESULTS / "afd_model_mpi_xeon-2core.json"
TRANSPORTS = ("torch", "mpi")


@dataclass(frozen=True)
class Link:
    """One path between the buffers of two ranks: bytes/s, a fixed latency per transfer and a
    cost per message posted; or a measured table of one-way µs against message bytes."""

    name: str
    bandwidth: float  # bytes/s per direction per GPU
    latency_us: float
    per_message_us: float
    source: str
    table: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # (bytes, one-way µs)

    def __post_init__(self) -> None:
        positive(f"{self.name}.bandwidth", self.bandwidth)
        nonnegative(f"{self.name}.latency_us", self.latency_us)
        nonnegative(f"{self.name}.per_message_us", self.per_message_us)

    def message_us(self, nbytes: float) -> float:
        """One message of ``nbytes`` (µs): the table (extended at its last rate), or
        latency + bytes / bandwidth."""
        if self.table is None:
            return self.latency_us + nbytes / self.bandwidth * 1e6
        sizes, us = self.table
        if nbytes <= sizes[-1]:
            return interp1(sizes, us, max(nbytes, sizes[0])) or us[0]
        return us[-1] + (nbytes - sizes[-1]) / self.bandwidth * 1e6


@dataclass(frozen=True)
class Transport:
    """A data plane: its link inside a host and between hosts, and for host-staged transports
    the device<->host copy each message pays on each side."""

    name: str
    intra: Link
    inter: Link
    staged: bool
    pcie_bw: float = 0.0  # bytes/s of one device<->host copy (staged only)
    copy_latency_us: float = 0.0  # per copy (staged only)
    source: str = ""

    def link(self, same_host: bool) -> Link:
        """The link between an attention and an FFN rank."""
        return self.intra if same_host else self.inter

    def staging_us(self, nbytes: float) -> float:
        """One device->host (or host->device) copy of ``nbytes`` (µs); 0 when not staged."""
        if not self.staged:
            return 0.0
        return self.copy_latency_us + nbytes / self.pcie_bw * 1e6


# NIC: 400 Gb/s per GPU (ConnectX-7; the paper's §5.4 400 Gbps x 8 per server), as in the GPU
# presets of hardware.py; its latency is the model's existing 10 µs assumption.
NIC_BW, NIC_LATENCY_US = 50e9, 10.0
NVLINK_BW = 450e9  # NVLink 4 (H100 / H200 SXM): 900 GB/s bidirectional per GPU (datasheets)


def torch_transport() -> Transport:
    """NCCL point-to-point on device buffers."""
    return Transport(
        "torch",
        Link("nvlink", NVLINK_BW, 5.0, 1.0,
             "NVLink 4 datasheet rate (no measurement here); latency 5 µs assumed (nccl-tests "
             "report ~3 µs for a small send/recv between two H100s over NVLink, "
             "NVIDIA/nccl#1487) and 1 µs per message of a grouped batch_isend_irecv assumed"),
        Link("nic-rdma", NIC_BW, NIC_LATENCY_US, 1.0,
             "400 Gb/s NIC per GPU with GPUDirect RDMA (assumed, as hardware.py); latency "
             "10 µs assumed"),
        staged=False, source="device buffers end to end")


def mpi_transport(shm_file: Path = MPI_SHM) -> Transport:
    """mpi4py on host buffers: the measured shared-memory ping-pong inside a host."""
    table = load_ping_pong(shm_file)
    rate = table[0][-1] / table[1][-1] * 1e6  # bytes/s of the largest measured message
    return Transport(
        "mpi",
        Link("mpi-shm", rate, table[1][0], 0.0,
             f"MPI ping-pong over shared memory measured by perf/afd/bench_mpi.py "
             f"({shm_file.name}; a 2-core VM, not a GPU host)", table),
        Link("mpi-ucx", NIC_BW, NIC_LATENCY_US, 0.0,
             "UCX over the 400 Gb/s NIC on host memory (assumed: the pip Open MPI 5 has UCX; "
             "not measured)"),
        staged=True, pcie_bw=25e9, copy_latency_us=10.0,
        source="device<->host copies assumed 25 GB/s (pageable, about half the ~50 GB/s a "
               "pinned PCIe Gen5 x16 copy reaches) and 10 µs each; one copy per call and side")


def transport(name: str) -> Transport:
    """The preset named ``name``."""
    if name == "torch":
        return torch_transport()
    if name == "mpi":
        return mpi_transport()
    raise AfdInputError(f"unknown transport {name!r}; known: {', '.join(TRANSPORTS)}")


def with_link(t: Transport, bandwidth_gbps: float | None, latency_us: float | None) -> Transport:
    """``t`` with its inter-host link's bandwidth (GB/s) and/or latency (µs) replaced."""
    inter = t.inter
    if bandwidth_gbps is not None:
        inter = replace(inter, bandwidth=positive("link bandwidth", bandwidth_gbps) * 1e9)
    if latency_us is not None:
        inter = replace(inter, latency_us=nonnegative("link latency", latency_us))
    return replace(t, inter=inter)


def load_ping_pong(path: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(bytes, one-way µs) of a ``step3-afd-mpi/1`` file, sizes increasing."""
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise AfdInputError(f"{path}: no such file (run perf/afd/bench_mpi.py)") from None
    if raw.get("format") != "step3-afd-mpi/1":
        raise AfdInputError(f"{path}: format must be 'step3-afd-mpi/1'")
    rows = sorted((r["bytes"], r["one_way_us_median"]) for r in raw["ping_pong"])
    return tuple(float(b) for b, _ in rows), tuple(float(u) for _, u in rows)
