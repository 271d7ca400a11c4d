"""Triton GPU kernels. Imported lazily by the op modules, only for CUDA tensors."""
