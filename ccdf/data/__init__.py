"""Data sets and value-range transforms."""

from ccdf.data.datasets import ComplexSliceFolder, ImageFolder, bundled_samples, stack_images
from ccdf.data.transforms import to_model, to_unit

__all__ = ["ComplexSliceFolder", "ImageFolder", "bundled_samples", "stack_images", "to_model", "to_unit"]
