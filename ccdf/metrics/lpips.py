r"""LPIPS (Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric", CVPR 2018),
version 0.1, from local weight files.

.. math:: d(x, y) = \sum_l \operatorname{mean}_{h,w}\; w_l^\top \big(\hat f_l(x) - \hat f_l(y)\big)^{\odot 2}

where :math:`\hat f_l` are the backbone's ReLU activations at five taps, each normalised to unit
length over channels, and :math:`w_l \ge 0` are the learned 1x1 "lin" heads (no bias). Inputs are
in [-1, 1] and first pass the reference ScalingLayer ``(x - shift) / scale``. This is the reference
``lpips`` package's ``LPIPS(net=..., version="0.1")`` in eval mode (dropout off, no resizing).

Weights are two local files (names and URLs in :data:`ccdf.metrics.weights.WEIGHT_FILES`):
the torchvision ImageNet checkpoint of the backbone (``alexnet-owt-7be5be79.pth`` or
``vgg16-397923af.pth``) and the lpips v0.1 heads (``alex.pth`` or ``vgg.pth``, keys
``lin{k}.model.1.weight``). Both are read with ``torch.load(weights_only=True)`` and checked key by key.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ccdf.metrics.weights import CorruptWeightsError, MissingWeightsError, fetch_hint, resolve

# net -> (torchvision constructor, weights key of the backbone, of the heads, indices of the tapped ReLUs)
NETS: dict[str, tuple[str, str, str, tuple[int, ...]]] = {
    "alex": ("alexnet", "alexnet", "lpips_alex", (1, 4, 7, 9, 11)),  # relu1..relu5
    "vgg": ("vgg16", "vgg16", "lpips_vgg", (3, 8, 15, 22, 29)),  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
}


def _backbone_features(arch: str) -> nn.Sequential:
    """torchvision's ``<arch>().features`` with PyTorch's default init (the classifier is never built)."""
    import torchvision

    with torch.device("meta"):  # skip allocating and initialising the large classifier
        model = getattr(torchvision.models, arch)(weights=None)
    features = model.features.to_empty(device="cpu")
    for module in features.modules():
        if isinstance(module, nn.Conv2d):
            module.reset_parameters()
    return features


class LPIPS(nn.Module):
    """LPIPS v0.1 distance with an AlexNet (``net="alex"``) or VGG16 (``net="vgg"``) backbone.

    Built with random weights; use :func:`load_lpips` for the published ones. Parameters are
    frozen and the module stays in eval mode; gradients still flow to the inputs.

    ``forward(x, y)``: two ``[B, 3, H, W]`` images in [-1, 1] -> ``[B]`` distances.
    """

    shift: Tensor
    scale: Tensor

    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        if net not in NETS:
            raise ValueError(f"net must be one of {sorted(NETS)}, got {net!r}")
        self.net = net
        arch, _, _, taps = NETS[net]
        self.taps = taps
        self.features = _backbone_features(arch)[: taps[-1] + 1]
        channels = [self.features[i - 1].out_channels for i in taps]  # each tap is the ReLU after a conv
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in channels)
        # the reference ScalingLayer (ImageNet statistics expressed in [-1, 1])
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:
        """Always eval mode (the reference metric has dropout off)."""
        return super().train(False)

    def _taps(self, x: Tensor) -> list[Tensor]:
        out = []
        h = (x - self.shift) / self.scale
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self.taps:
                out.append(h)
        return out

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"LPIPS needs two [B, 3, H, W] images of one shape, got {tuple(x.shape)}, {tuple(y.shape)}"
            )
        d = x.new_zeros(x.shape[0])
        for lin, fx, fy in zip(self.lins, self._taps(x), self._taps(y), strict=True):
            diff = (_unit_channels(fx) - _unit_channels(fy)) ** 2
            d = d + lin(diff).mean(dim=(1, 2, 3))
        return d


def _unit_channels(f: Tensor, eps: float = 1e-10) -> Tensor:
    """f / (||f||_channels + eps), the reference ``normalize_tensor``."""
    return f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


def _load_state(path: Path, key: str) -> dict[str, Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CorruptWeightsError(
            f"{path} is not a readable PyTorch checkpoint ({type(err).__name__}: {str(err).splitlines()[0]}).\n"
            f"Replace it (a truncated download is the usual cause):\n{fetch_hint(key, path)}"
        ) from err
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CorruptWeightsError(f"{path} is not a state_dict of tensors.\n{fetch_hint(key, path)}")
    return state


def _check_keys(path: Path, key: str, state: dict[str, Tensor], expected: dict[str, torch.Size], extra_ok: str) -> None:
    """Every expected key with its shape; nothing else except keys starting with ``extra_ok``."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(k for k in set(state) - set(expected) if not (extra_ok and k.startswith(extra_ok)))
    wrong = sorted(k for k in set(expected) & set(state) if state[k].shape != expected[k])
    if missing or unexpected or wrong:
        parts = [f"{path} does not hold the expected weights ({fetch_hint(key, path).splitlines()[0]}):"]
        if missing:
            parts.append(f"  missing keys: {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"  unexpected keys: {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
        for k in wrong[:8]:
            parts.append(f"  {k}: shape {tuple(state[k].shape)}, expected {tuple(expected[k])}")
        raise CorruptWeightsError("\n".join(parts))


def load_lpips(
    weights_dir: str | Path | None = None,
    *,
    net: str = "alex",
    backbone: str | Path | None = None,
    lin: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> LPIPS:
    """LPIPS with the published weights, from local files.

    Args:
        weights_dir: folder holding the two files under their standard names (``alexnet-owt-7be5be79.pth``
            and ``alex.pth`` for ``net="alex"``; ``vgg16-397923af.pth`` and ``vgg.pth`` for ``"vgg"``).
        net: ``"alex"`` (the usual LPIPS) or ``"vgg"``.
        backbone, lin: explicit paths (file, or folder with the standard name) overriding ``weights_dir``.
        device: where the module goes.

    Raises:
        MissingWeightsError: a file is absent (the message names it, where it goes and its URL).
        CorruptWeightsError: a file is unreadable or its keys/shapes are not the expected ones.
    """
    if net not in NETS:
        raise ValueError(f"net must be one of {sorted(NETS)}, got {net!r}")
    _, backbone_key, lin_key, _ = NETS[net]
    paths, missing = [], []
    for key, given in ((backbone_key, backbone), (lin_key, lin)):
        try:
            paths.append(resolve(key, given, weights_dir))
        except MissingWeightsError as err:  # report every missing file at once
            missing.append(str(err))
    if missing:
        raise MissingWeightsError("\n".join(missing))
    backbone_path, lin_path = paths
    model = LPIPS(net)

    state = _load_state(backbone_path, backbone_key)
    expected = {f"features.{k}": v.shape for k, v in model.features.state_dict().items()}
    _check_keys(backbone_path, backbone_key, state, expected, "classifier.")  # LPIPS does not use the classifier
    model.features.load_state_dict({k.removeprefix("features."): state[k] for k in expected})

    state = _load_state(lin_path, lin_key)
    expected = {f"lin{i}.model.1.weight": m.weight.shape for i, m in enumerate(model.lins)}
    _check_keys(lin_path, lin_key, state, expected, "")
    for i, m in enumerate(model.lins):
        m.weight.copy_(state[f"lin{i}.model.1.weight"])
    return model.to(device)
