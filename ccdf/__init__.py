"""ccdf: Come-Closer-Diffuse-Faster (Chung, Sim & Ye, CVPR 2022) for inverse problems.

Importing the package is cheap; import the sub-packages you need (``ccdf.sampling``,
``ccdf.operators``, ...). Hydra and Lightning are only touched by ``ccdf.app``, ``ccdf.pipelines`` and
``ccdf.lightning``.
"""

__version__ = "0.1.0"
