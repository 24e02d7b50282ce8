"""Triton fused kernels (see kernels/README.md)."""
