"""Data sets and value-range transforms."""

from ccdf.data.datasets import (
    ComplexSliceFolder,
    FastMRIMultiCoil,
    ImageFolder,
    bundled_multicoil,
    bundled_samples,
    stack_images,
)
from ccdf.data.transforms import to_model, to_unit

__all__ = [
    "ComplexSliceFolder",
    "FastMRIMultiCoil",
    "ImageFolder",
    "bundled_multicoil",
    "bundled_samples",
    "stack_images",
    "to_model",
    "to_unit",
]
