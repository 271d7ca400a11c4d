"""Accelerator descriptions: memory and compute ceilings, network links, capacity.

Units: bytes/s, FLOP/s, seconds, bytes. ``source`` says where each preset's numbers come from;
the paper's presets are Table 4 of arXiv 2507.19427 plus its §5.4 NIC assumption.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from .checks import AfdInputError, nonnegative, positive

GIB = 1024**3


@dataclass(frozen=True)
class Hardware:
    """One GPU type as the model sees it (all rates are per GPU)."""

    name: str
    hbm_bw: float  # bytes/s, read-dominated streaming ceiling
    bf16_flops: float  # FLOP/s, dense BF16 GEMM ceiling
    fp8_flops: float  # FLOP/s, dense FP8 GEMM ceiling (== bf16_flops where FP8 is unsupported)
    memory_bytes: float  # HBM capacity
    nic_bw: float  # bytes/s per GPU per direction on the attention<->FFN network
    link_latency_s: float  # one transfer's fixed latency (post + wire + completion), s
    nvlink_bw: float  # bytes/s per GPU per direction inside one 8-GPU host
    source: str
    price_per_hour: float | None = None  # USD per card-hour (paper Table 4), cost checks only

    def __post_init__(self) -> None:
        for field in ("hbm_bw", "bf16_flops", "fp8_flops", "memory_bytes", "nic_bw", "nvlink_bw"):
            positive(f"{self.name}.{field}", getattr(self, field))
        nonnegative(f"{self.name}.link_latency_s", self.link_latency_s)

    def gemm_flops(self, weight_bytes: int) -> float:
        """Peak GEMM FLOP/s for weights of ``weight_bytes`` bytes per element (1 = FP8)."""
        return self.fp8_flops if weight_bytes == 1 else self.bf16_flops


# NIC per GPU: the paper assumes 400 Gbps x 8 NICs per H800/H20 server and 200 Gbps x 8 for
# A800/910B (§5.4), i.e. 50 or 25 GB/s per GPU; it measured 40 GB/s per NIC with DeepEP.
# The link latency is not stated in the paper: 10 us is this model's assumption (RDMA write +
# completion between two hosts under one ToR switch); docs/afd-model.md shows the sensitivity.
_LATENCY = 10e-6

_PRESETS = MappingProxyType({
    "h800": Hardware("h800", hbm_bw=3.35e12, bf16_flops=9.89e14, fp8_flops=1.98e15,
                     memory_bytes=80e9, nic_bw=50e9, link_latency_s=_LATENCY, nvlink_bw=200e9,
                     source="paper Table 4 (peak), 400Gbps x 8 NICs/server (§5.4); "
                            "NVLink 400 GB/s bidirectional (H800 datasheet)",
                     price_per_hour=2.0),
    "h20": Hardware("h20", hbm_bw=4.0e12, bf16_flops=1.48e14, fp8_flops=2.96e14,
                    memory_bytes=96e9, nic_bw=50e9, link_latency_s=_LATENCY, nvlink_bw=450e9,
                    source="paper Table 4, 400Gbps x 8 NICs/server (§5.4)", price_per_hour=0.8),
    "a800": Hardware("a800", hbm_bw=2.0e12, bf16_flops=3.12e14, fp8_flops=3.12e14,
                     memory_bytes=80e9, nic_bw=25e9, link_latency_s=_LATENCY, nvlink_bw=200e9,
                     source="paper Table 4 (no FP8: INT8 at the BF16 rate), 200Gbps x 8 (§5.4)",
                     price_per_hour=0.75),
    "910b": Hardware("910b", hbm_bw=1.6e12, bf16_flops=2.80e14, fp8_flops=2.80e14,
                     memory_bytes=64e9, nic_bw=25e9, link_latency_s=_LATENCY, nvlink_bw=200e9,
                     source="paper Table 4 (no FP8), 200Gbps x 8 (§5.4)", price_per_hour=0.67),
    # Measured ceilings of this project (shared PERF.md, one H100 80GB HBM3): read 3.0 TB/s,
    # BF16 GEMM 670 TFLOP/s, FP8 GEMM 1,223 TFLOP/s; 79.2 GiB reported by the device.
    # NIC and NVLink are not measured: ConnectX-7 400 Gb/s per GPU, NVLink4 450 GB/s/direction.
    "h100": Hardware("h100", hbm_bw=3.0e12, bf16_flops=670e12, fp8_flops=1223e12,
                     memory_bytes=79.2 * GIB, nic_bw=50e9, link_latency_s=_LATENCY,
                     nvlink_bw=450e9,
                     source="PERF.md measured H100 ceilings; NIC 400 Gb/s and NVLink 450 GB/s "
                            "per direction assumed (datasheet)"),
    # Not measured: the H100's measured compute (same GH100 die) and the H200 datasheet HBM
    # bandwidth (4.8 TB/s) derated by the H100's measured/datasheet ratio (3.02/3.35).
    "h200": Hardware("h200", hbm_bw=4.8e12 * 3.02 / 3.35, bf16_flops=670e12, fp8_flops=1223e12,
                     memory_bytes=139 * GIB, nic_bw=50e9, link_latency_s=_LATENCY,
                     nvlink_bw=450e9,
                     source="estimate: H100 measured compute, H200 datasheet HBM derated like "
                            "the H100's; NIC/NVLink assumed as for h100"),
})


def hardware(name: str) -> Hardware:
    """The preset named ``name`` (case-insensitive); raises naming the known presets."""
    key = name.lower()
    if key not in _PRESETS:
        raise AfdInputError(f"unknown gpu {name!r}; known: {', '.join(sorted(_PRESETS))}")
    return _PRESETS[key]


def preset_names() -> tuple[str, ...]:
    """Names accepted by :func:`hardware`."""
    return tuple(sorted(_PRESETS))
