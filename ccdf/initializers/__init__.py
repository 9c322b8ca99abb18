"""Initial estimates x_init: classical ones here; learned nets plug in through the same call."""

from ccdf.initializers.basic import Bicubic, Initializer, MaskedFill, PseudoInverse, Zero

__all__ = ["Bicubic", "Initializer", "MaskedFill", "PseudoInverse", "Zero"]
