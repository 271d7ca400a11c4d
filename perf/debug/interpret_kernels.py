"""Run the plugins' GPU tests on a CPU in Triton's interpreter (TRITON_INTERPRET=1), with the
two numerics of the Triton 3.6 interpreter that differ from the GPU's replaced:

* float -> float8/bfloat16 conversion: the interpreter rounds half up without carrying into the
  exponent (7.9 -> e4m3 4.0, where the GPU's cvt.rn.satfinite gives 8.0); here torch's
  round-to-nearest-even conversion, saturating at +-448 for e4m3 as the GPU's cvt does;
* tl.dot with bfloat16 operands: the interpreter multiplies their raw uint16 bits; here the
  operands are widened to float32 first (float8 operands too, exact either way).

    python perf/debug/interpret_kernels.py [pytest args]     # default: tests/plugins -m gpu

A debugging aid for machines without a GPU (slow: minutes for the small cases; use -k), not a
substitute for the GPU run: tensor-core accumulation order, exp2/div approximations and
everything about speed are only seen on the device.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.runtime import interpreter  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
_TORCH = {tl.float32: torch.float32, tl.float16: torch.float16, tl.bfloat16: torch.bfloat16,
          tl.float8e4nv: torch.float8_e4m3fn, tl.float8e5: torch.float8_e5m2,
          tl.float64: torch.float64}
_BITS = {8: (np.uint8, torch.uint8), 16: (np.int16, torch.int16), 32: (np.int32, torch.int32),
         64: (np.int64, torch.int64)}


def _as_torch(data: np.ndarray, dtype) -> torch.Tensor:
    """The interpreter's storage of a `dtype` tensor (its bits) as a torch tensor of that dtype."""
    np_bits, _ = _BITS[dtype.primitive_bitwidth]
    return torch.from_numpy(np.ascontiguousarray(data).view(np_bits)).view(_TORCH[dtype])


def _convert_float(data, input_dtype, output_dtype, rounding_mode):
    """Bits of `data` (input_dtype) converted to output_dtype, as the GPU rounds them."""
    x = _as_torch(data, input_dtype)
    if output_dtype == tl.float8e4nv:
        x = x.float().clamp(-448.0, 448.0)
    np_bits, torch_bits = _BITS[output_dtype.primitive_bitwidth]
    return x.to(_TORCH[output_dtype]).contiguous().view(torch_bits).numpy().view(np_bits)


def _create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
    def widen(t):
        if t.dtype.primitive_bitwidth <= 16 and t.dtype.is_floating() and t.dtype != tl.float16:
            return _as_torch(t.data, t.dtype).float().numpy()
        return t.data
    out = np.matmul(widen(a), widen(b), dtype=d.data.dtype) + d.data
    return interpreter.TensorHandle(out, d.dtype.scalar)


def patch() -> None:
    interpreter._convert_float = _convert_float
    interpreter.InterpreterBuilder.create_dot = _create_dot


if __name__ == "__main__":
    patch()
    sys.path.insert(0, str(ROOT))
    args = sys.argv[1:] or [str(ROOT / "tests" / "plugins"), "-m", "gpu"]
    sys.exit(pytest.main(["--noconftest", "-p", "no:cacheprovider", "-q",
                          "-W", "ignore::DeprecationWarning", *args]))
