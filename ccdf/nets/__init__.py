"""Network architectures only (no schedule or sampling logic).

Import the module you need, e.g. ``from ccdf.nets.rrdbnet import RRDBNet`` or
``from ccdf.nets.fastmri_unet import Unet``; this package imports nothing on its own.
"""
