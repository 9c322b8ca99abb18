"""Initial estimates x_init: classical ones here; learned nets plug in through the same call."""

from ccdf.initializers.basic import Bicubic, Gray, Initializer, MaskedFill, PseudoInverse, Wiener, Zero

__all__ = ["Bicubic", "Gray", "Initializer", "MaskedFill", "PseudoInverse", "Wiener", "Zero"]
