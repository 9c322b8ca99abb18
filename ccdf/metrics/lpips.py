r"""LPIPS (Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric", CVPR 2018),
version 0.1, computed by torchmetrics with the backbone from a local file.

.. math:: d(x, y) = \sum_l \operatorname{mean}_{h,w}\; w_l^\top \big(\hat f_l(x) - \hat f_l(y)\big)^{\odot 2}

where :math:`\hat f_l` are the backbone's ReLU activations at five taps, each normalised to unit
length over channels, and :math:`w_l \ge 0` are the learned 1x1 "lin" heads. Inputs are in [-1, 1].
The network and its forward pass are torchmetrics' copy of the reference ``lpips`` package
(``torchmetrics.functional.image.lpips._NoTrainLpips``, the module behind its
``LearnedPerceptualImagePatchSimilarity``; eval mode, no resizing).

Weights: the v0.1 linear heads ship inside the installed torchmetrics wheel
(``torchmetrics/functional/image/lpips_models/{alex,vgg}.pth``) and are read from there. The
backbone is one local file, torchvision's ImageNet checkpoint (``alexnet-owt-7be5be79.pth`` or
``vgg16-397923af.pth``; names and URLs in :data:`ccdf.metrics.weights.WEIGHT_FILES`), read with
``torch.load(weights_only=True)`` and checked key by key. torchmetrics' own constructors would fetch
that file through torchvision; the network is built here without it (on the meta device, so the unused
classifier is never allocated) and nothing is downloaded.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from torch import Tensor, nn

from ccdf.metrics.weights import CorruptWeightsError, fetch_hint, resolve

NETS = {"alex": "alexnet", "vgg": "vgg16"}  # LPIPS net -> WEIGHT_FILES key (torchvision architecture) of its backbone


def _torchmetrics_lpips(net: str) -> nn.Module:
    """torchmetrics' ``_NoTrainLpips(net=net)`` with its bundled heads and a PyTorch-default-initialised backbone."""
    import torchmetrics
    from torchmetrics.functional.image import lpips as tm

    missing = [name for name in ("_NoTrainLpips", "_LPIPS", "ScalingLayer") if not hasattr(tm, name)]
    if missing:  # private names: a torchmetrics release may move them
        raise RuntimeError(
            f"LPIPS: torchmetrics {torchmetrics.__version__} has no {', '.join(missing)} in "
            "torchmetrics.functional.image.lpips (ccdf reads its network and bundled heads from there; tested with "
            "torchmetrics 1.0-1.9). Install a torchmetrics 1.x release, or run with eval.lpips=false."
        )
    with torch.device("meta"):  # skip allocating and initialising torchvision's large classifier
        model = tm._NoTrainLpips(pretrained=False, net=net, pnet_rand=True)
    model = model.to_empty(device="cpu")
    model.scaling_layer = tm.ScalingLayer()  # its constant buffers were emptied with the rest
    for module in model.net.modules():
        if isinstance(module, nn.Conv2d):
            module.reset_parameters()
    heads = Path(inspect.getfile(tm._LPIPS)).parent / "lpips_models" / f"{net}.pth"  # the file torchmetrics loads
    if not heads.is_file():
        raise FileNotFoundError(f"LPIPS: the linear heads {heads} are not in the installed torchmetrics wheel; "
                                "reinstall torchmetrics 1.x, or run with eval.lpips=false")  # fmt: skip
    state = torch.load(heads, map_location="cpu", weights_only=True)
    for i, lin in enumerate(model.lins):
        lin.model[-1].weight.copy_(state[f"lin{i}.model.1.weight"])
    return model


class LPIPS(nn.Module):
    """LPIPS v0.1 distance with an AlexNet (``net="alex"``) or VGG16 (``net="vgg"``) backbone.

    Built with the published heads and a randomly initialised backbone; use :func:`load_lpips` for
    the published backbone. Parameters are frozen and the module stays in eval mode; gradients still
    flow to the inputs.

    ``forward(x, y)``: two ``[B, 3, H, W]`` images in [-1, 1] -> ``[B]`` distances.
    """

    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        if net not in NETS:
            raise ValueError(f"net must be one of {sorted(NETS)}, got {net!r}")
        self.net = net
        self.lpips = _torchmetrics_lpips(net)
        self.requires_grad_(False)
        self.eval()

    @property
    def lins(self) -> nn.ModuleList:
        """The five linear heads (torchmetrics' ``NetLinLayer``; the 1x1 conv is ``lins[k].model[-1]``)."""
        return self.lpips.lins

    def train(self, mode: bool = True) -> LPIPS:
        """Always eval mode (the reference metric has dropout off)."""
        return super().train(False)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"LPIPS needs two [B, 3, H, W] images of one shape, got {tuple(x.shape)}, {tuple(y.shape)}"
            )
        return self.lpips(x, y).reshape(x.shape[0])


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
    device: str | torch.device = "cpu",
) -> LPIPS:
    """LPIPS with the published weights: the heads bundled with torchmetrics, the backbone from a local file.

    Args:
        weights_dir: folder holding the backbone under its standard name (``alexnet-owt-7be5be79.pth``
            for ``net="alex"``, ``vgg16-397923af.pth`` for ``"vgg"``).
        net: ``"alex"`` (the usual LPIPS) or ``"vgg"``.
        backbone: explicit path (file, or folder with the standard name) overriding ``weights_dir``.
        device: where the module goes.

    Raises:
        MissingWeightsError: the backbone file is absent (the message names it, where it goes and its URL).
        CorruptWeightsError: the file is unreadable or its keys/shapes are not torchvision's.
    """
    if net not in NETS:
        raise ValueError(f"net must be one of {sorted(NETS)}, got {net!r}")
    key = NETS[net]
    path = resolve(key, backbone, weights_dir)
    state = _load_state(path, key)
    model = LPIPS(net)
    # torchmetrics keeps torchvision's layer indices inside its slices: sliceK.<i>.weight <- features.<i>.weight
    names = {f"features.{name.split('.', 1)[1]}": name for name in model.lpips.net.state_dict()}
    expected = {k: model.lpips.net.state_dict()[v].shape for k, v in names.items()}
    _check_keys(path, key, state, expected, "classifier.")  # LPIPS does not use the classifier
    model.lpips.net.load_state_dict({names[k]: state[k] for k in names}, strict=True)
    return model.to(device)
