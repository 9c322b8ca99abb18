r"""Multi-coil Cartesian MRI (SENSE): y_c = M F (S_c x) for each coil c.

Conventions (as :mod:`ccdf.operators.mri`): images are complex ``[B, 1, H, W]`` (a real input is
read as complex with zero imaginary part); k-space is complex ``[B, C, H, W]``, one channel per
coil, with the DC term at ``(H // 2, W // 2)`` and the centred orthonormal FFT (fastMRI's
``fft2c``). Sensitivity maps ``S`` are complex ``[C, H, W]`` (shared by the batch) or
``[B, C, H, W]`` (one set per image, e.g. ESPIRiT maps that come with each data item, see
:meth:`MultiCoilMRI.for_batch`). The mask ``M`` is 0/1 on the k-space grid: a ``[W]`` column mask
(1-D Cartesian, :func:`ccdf.operators.masks.cartesian_mask`), an ``[H, W]`` mask (2-D
variable-density Poisson disc, :func:`ccdf.operators.masks.poisson_mask`) or ``[B, H, W]`` (one
per image); every coil sees the same mask.

Data consistency. Under-sampled, the SENSE normal operator :math:`G = A^H A = \sum_c S_c^H F^H M F S_c`
is not diagonal in any fixed basis (the coils mix the pixels that alias onto each other). With a
*column* mask (the same sampled columns in every row: 1-D Cartesian) it is block diagonal over image
rows: :math:`F = F_H F_W` and M acts on the column index only, so :math:`F^H M F = F_W^H M F_W` acts
within each row and :math:`(G x)_h = G_h x_h` with the W x W matrix
:math:`G_h = (F_W^H M F_W) \circ (S_h^H S_h)` (Hadamard product; :math:`S_h` is the C x W matrix of the
maps' row h). ``pinv``, ``project`` and ``prox`` then use the closed form
:math:`A^+ = G^+ A^H`, :math:`(G + \lambda I)^{-1}` from the eigendecomposition of every
:math:`G_h`, computed once per operator in float64 (H eigendecompositions of W x W; eigenvalues below
``rcond`` times the largest count as zero: the minimum-norm pseudo-inverse). Coil maps are smooth, so
random column masks leave k-space gaps the coils cannot bridge: many :math:`G_h` have eigenvalues of
1e-6 or less (SENSE's g-factor); this is why the solve is exact rather than iterative, and why it runs
in float64 whatever the images' dtype. Memory: B x H x W^2 complex128 (65 MB per 160 x 160 image,
520 MB at 320 x 320). With a 2-D mask nothing decouples and conjugate gradients solve the normal
equations in image space (float64, relative residual 1e-10, at most ``cg_max_iter`` iterations); on
ill-conditioned problems this is slow and may stop before full precision.

:class:`CoilKSpace` is the per-coil operator y_c = M F c_c on a stack of coil images ``[B, C, H, W]``
(score-MRI's SSOS sampler reconstructs each coil image with it), with closed forms.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ccdf.operators.base import Operator, check_spatial, conjugate_gradient
from ccdf.operators.masks import poisson_mask
from ccdf.operators.mri import CartesianColumns, KSpaceMask, fft2c, ifft2c


def _complex(x: Tensor) -> Tensor:
    return x if torch.is_complex(x) else torch.complex(x, torch.zeros_like(x))


def _size2(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = (int(v) for v in size)
    return h, w


def _mask_buffer(mask: Tensor, image_size: int | Sequence[int] | None) -> Tensor:
    """A 0/1 mask as ``[Bm, 1, H, W]`` float32 from ``[W]`` (needs ``image_size``), ``[H, W]`` or ``[B, H, W]``."""
    mask = torch.as_tensor(mask)
    if mask.is_complex():
        if bool((mask.imag != 0).any()):
            raise ValueError("mask must be real (0 or 1)")
        mask = mask.real
    mask = mask.to(torch.float32)
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask entries must be 0 or 1")
    if mask.ndim == 1:
        if image_size is None:
            raise ValueError("a column mask [W] needs image_size (or maps) to know H")
        h, w = _size2(image_size)
        if mask.shape[0] != w:
            raise ValueError(f"column mask of {mask.shape[0]} does not fit width {w}")
        mask = mask[None, :].expand(h, -1)
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3:
        raise ValueError(f"mask must be [W], [H, W] or [B, H, W], got shape {tuple(mask.shape)}")
    return mask.contiguous()[:, None]


def _batch_param(p: Tensor, x: Tensor, what: str) -> Tensor:
    """A ``[1 | B, ...]`` parameter for a batch ``x`` ``[B, ...]``, on x's device (clear error otherwise)."""
    if p.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"{what} are given for {p.shape[0]} images but the batch has {x.shape[0]}")
    return p.to(device=x.device)


def _cg_tol(x: Tensor) -> float:
    return 1e-10 if x.real.dtype == torch.float64 else 1e-6


def rss(coil_images: Tensor, dim: int = 1) -> Tensor:
    """Root-sum-of-squares coil combination sqrt(sum_c |c_c|^2) (fastMRI's reference image), keepdim."""
    return coil_images.abs().pow(2).sum(dim, keepdim=True).sqrt()


def sense_combine(coil_images: Tensor, maps: Tensor) -> Tensor:
    r"""The least-squares image of fully sampled coil images: :math:`\sum_c \bar S_c c_c / \sum_c |S_c|^2`
    (0 where every map vanishes). ``coil_images`` ``[..., C, H, W]``, ``maps`` broadcastable; keepdim."""
    maps = maps.to(coil_images.dtype)
    num = (maps.conj() * coil_images).sum(-3, keepdim=True)
    den = maps.abs().pow(2).sum(-3, keepdim=True)
    return torch.where(den > 0, num / den.clamp(min=torch.finfo(den.dtype).tiny), torch.zeros_like(num))


class MultiCoilMRI(CartesianColumns, Operator):
    r"""SENSE forward model: y_c = M F (S_c x), adjoint :math:`\sum_c \bar S_c F^H M y_c`.

    Args:
        mask: ``[W]`` column mask, ``[H, W]`` or ``[B, H, W]`` k-space mask (0/1, centred grid).
        maps: coil sensitivities, complex ``[C, H, W]`` or ``[B, C, H, W]``; ``None`` for an operator
            whose maps come with the data (:meth:`for_batch` returns the batch's operator).
        image_size: ``(H, W)`` or an int; needed with a column mask when no maps are given.
        cg_max_iter: iteration cap of the conjugate-gradient solves (2-D masks).
        rcond: eigenvalues of the per-row normal matrices below ``rcond`` times the largest one count
            as zero in ``pinv``/``project`` (column masks).

    Example (one pixel, two coils, full sampling):

    >>> op = MultiCoilMRI(torch.ones(1, 1), maps=torch.tensor([[[0.6 + 0j]], [[0.8j]]]))
    >>> x = torch.tensor([[[[2.0 + 0j]]]])
    >>> op(x)[0, :, 0, 0]
    tensor([1.2000+0.0000j, 0.0000+1.6000j])
    >>> op.adjoint(op(x))[0, 0, 0, 0]
    tensor(2.+0.j)
    """

    def __init__(
        self,
        mask: Tensor,
        maps: Tensor | None = None,
        image_size: int | Sequence[int] | None = None,
        *,
        cg_max_iter: int = 300,
        rcond: float = 1e-12,
    ) -> None:
        super().__init__()
        if maps is not None:
            maps = torch.as_tensor(maps)
            if not maps.is_complex():
                maps = torch.complex(maps.to(torch.float32), torch.zeros_like(maps, dtype=torch.float32))
            if maps.ndim == 3:
                maps = maps[None]
            if maps.ndim != 4:
                raise ValueError(f"maps must be [C, H, W] or [B, C, H, W] complex, got shape {tuple(maps.shape)}")
            if not bool(torch.isfinite(torch.view_as_real(maps)).all()):
                raise ValueError("maps hold NaN or infinite values")
            if image_size is None:
                image_size = tuple(maps.shape[-2:])
        m = _mask_buffer(mask, image_size)
        if maps is not None and tuple(maps.shape[-2:]) != tuple(m.shape[-2:]):
            raise ValueError(
                f"maps of {tuple(maps.shape[-2:])} pixels do not match the mask's k-space of {tuple(m.shape[-2:])}"
            )
        if maps is not None and m.shape[0] not in (1, maps.shape[0]) and maps.shape[0] != 1:
            raise ValueError(f"{m.shape[0]} masks for {maps.shape[0]} sets of maps")
        if isinstance(cg_max_iter, bool) or not isinstance(cg_max_iter, int) or cg_max_iter < 1:
            raise ValueError(f"cg_max_iter must be a positive integer, got {cg_max_iter!r}")
        self.register_buffer("mask", m)
        self.register_buffer("maps", maps.contiguous() if maps is not None else None)
        if not 0 <= float(rcond) < 1:
            raise ValueError(f"rcond must be in [0, 1), got {rcond!r}")
        self.cg_max_iter = cg_max_iter
        self.rcond = float(rcond)
        self._eig: tuple[Tensor, Tensor] | None = None
        self._pinv_memo: tuple[Tensor, int, Tensor] | None = None

    @classmethod
    def _from_columns(cls, mask: Tensor, size: tuple[int, int], mask_args: tuple, *, per_image: bool, maps):
        """The :meth:`~ccdf.operators.mri.CartesianColumns.cartesian` operator: the same mask for every coil."""
        if per_image:
            raise ValueError("per_image masks are for SingleCoilMRI; MultiCoilMRI.cartesian draws one mask")
        return cls(mask, maps, size)

    @classmethod
    def poisson(
        cls,
        image_size: int | Sequence[int],
        acceleration: float = 4,
        calib_size: int = 24,
        seed: int = 0,
        maps: Tensor | None = None,
    ) -> MultiCoilMRI:
        """2-D variable-density Poisson-disc mask (sigpy's ``poisson``, :func:`ccdf.operators.masks.poisson_mask`)."""
        return cls(poisson_mask(image_size, acceleration, calib_size, seed), maps, image_size)

    # ------------------------------------------------------------------ parameters
    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.mask.shape[-2:])  # type: ignore[return-value]

    @property
    def num_coils(self) -> int | None:
        return None if self.maps is None else int(self.maps.shape[1])

    @property
    def acceleration(self) -> float:
        return float(self.mask[0].numel() / self.mask[0].sum().clamp(min=1))

    def extra_repr(self) -> str:
        maps = "from the data" if self.maps is None else f"{tuple(self.maps.shape)}"
        return f"size={self.size}, acceleration={self.acceleration:.3g}, maps={maps}"

    def with_maps(self, maps: Tensor) -> MultiCoilMRI:
        """The same mask and settings with other coil maps (``[C, H, W]`` or ``[B, C, H, W]``)."""
        mask = self.mask[:, 0]
        return MultiCoilMRI(mask if mask.shape[0] > 1 else mask[0], maps, self.size, cg_max_iter=self.cg_max_iter,
                            rcond=self.rcond)  # fmt: skip

    def select(self, idx: list[int]) -> MultiCoilMRI:
        per_image_maps = self.maps is not None and self.maps.shape[0] > 1
        if not per_image_maps and self.mask.shape[0] == 1:
            return self
        maps = self.maps[idx] if per_image_maps else self.maps
        mask = self.mask[idx, 0] if self.mask.shape[0] > 1 else self.mask[0, 0]
        sub = MultiCoilMRI(mask, maps, self.size, cg_max_iter=self.cg_max_iter, rcond=self.rcond)
        if self.maps is not None and self.decouples:  # share the per-row factorization (computed once)
            u, lam = self._rows()
            sub._eig = (u[idx] if u.shape[0] > 1 else u, lam[idx] if lam.shape[0] > 1 else lam)
        return sub

    def for_batch(self, batch: dict, generators: list[torch.Generator]) -> MultiCoilMRI:
        """The batch's operator: its items' ``maps`` ``[B, C, H, W]`` (each data item carries its own)."""
        maps = batch.get("maps") if isinstance(batch, dict) else None
        if maps is None:
            if self.maps is None:
                raise ValueError(
                    "MultiCoilMRI: the operator has no coil maps and the data items carry none (`maps`); use a "
                    "multi-coil data set (dataset=samples_multicoil or fastmri_multicoil) or give operator.maps"
                )
            return self
        maps = torch.as_tensor(maps)
        if tuple(maps.shape[-2:]) != self.size:
            raise ValueError(
                f"the data's coil maps are {tuple(maps.shape[-2:])} pixels but the operator's k-space is {self.size} "
                "(operator.image_size must equal dataset.size)"
            )
        return self.with_maps(maps)

    def _params(self, x: Tensor, what: str) -> tuple[Tensor, Tensor]:
        if self.maps is None:
            raise ValueError(
                "MultiCoilMRI has no coil maps: give maps, or get the batch's operator with "
                "for_batch(batch, generators)"
            )
        check_spatial(x, self.size, f"MultiCoilMRI {what}")
        maps = _batch_param(self.maps, x, "coil maps").to(dtype=_complex(x).dtype)
        mask = _batch_param(self.mask, x, "masks").to(dtype=x.real.dtype)
        return maps, mask

    # ------------------------------------------------------------------ the operator
    def forward(self, x: Tensor) -> Tensor:
        maps, mask = self._params(x, "images")
        if x.shape[1] != 1:
            raise ValueError(f"MultiCoilMRI expects coil-combined images [B, 1, H, W], got shape {tuple(x.shape)}")
        return mask * fft2c(maps * _complex(x))

    def adjoint(self, y: Tensor) -> Tensor:
        maps, mask = self._params(y, "k-space")
        if y.shape[1] != maps.shape[1]:
            raise ValueError(f"MultiCoilMRI k-space has {y.shape[1]} coils, the maps {maps.shape[1]}")
        return (maps.conj() * ifft2c(mask * _complex(y))).sum(1, keepdim=True)

    def normal(self, x: Tensor) -> Tensor:
        """A^H A x (the SENSE normal operator)."""
        return self.adjoint(self(x))

    def coil_images(self, x: Tensor) -> Tensor:
        """S_c x for each coil: ``[B, 1, H, W]`` -> ``[B, C, H, W]``."""
        maps, _ = self._params(x, "images")
        return maps * _complex(x)

    def combine(self, coil_images: Tensor) -> Tensor:
        r"""The least-squares image :math:`\sum_c \bar S_c c_c / \sum_c |S_c|^2` of coil images ``[B, C, H, W]``."""
        maps, _ = self._params(coil_images, "coil images")
        return sense_combine(_complex(coil_images), maps)

    def coil_operator(self) -> CoilKSpace:
        """The per-coil sampling y_c = M F c_c on coil images (same mask, and these maps for its
        :meth:`CoilKSpace.sense_step`), for coil-by-coil samplers (score-MRI's SSOS and hybrid)."""
        mask = self.mask[:, 0]
        return CoilKSpace(mask if mask.shape[0] > 1 else mask[0], maps=self.maps)

    # ------------------------------------------------------------------ data consistency
    @property
    def decouples(self) -> bool:
        """Whether every mask samples the same columns in all rows (1-D Cartesian): the exact per-row solve."""
        return bool((self.mask == self.mask[..., :1, :]).all())

    def _rows(self) -> tuple[Tensor, Tensor]:
        """Eigendecomposition of the per-row normal matrices G_h (float64): ``U`` ``[B, H, W, W]``,
        eigenvalues ``[B, H, W]``; computed once per operator (and shared with :meth:`select`'s)."""
        if self._eig is None:
            maps = self.maps.to(torch.complex128)
            mask = self.mask[:, 0, 0].to(torch.float64)  # [Bm, W]: the row all rows share
            w = mask.shape[-1]
            eye = torch.eye(w, dtype=torch.complex128, device=maps.device)
            f_w = torch.fft.fftshift(torch.fft.fft(torch.fft.ifftshift(eye, dim=0), dim=0, norm="ortho"), dim=0)
            q = f_w.conj().T[None] @ (mask[..., :, None].to(f_w.dtype) * f_w[None])  # F_W^H M F_W, [Bm, W, W]
            k = torch.einsum("bchi,bchj->bhij", maps.conj(), maps)  # S_h^H S_h, [Bs, H, W, W]
            threads = torch.get_num_threads()
            torch.set_num_threads(
                1
            )  # H small eigenproblems: threads inside each only contend (25x slower on busy cores)
            try:
                lam, u = torch.linalg.eigh(q[:, None] * k)
            finally:
                torch.set_num_threads(threads)
            self._eig = (u, lam.clamp(min=0))
        return self._eig

    def _row_apply(self, v: Tensor, lam_shift: float | None) -> Tensor:
        """G^+ v (``lam_shift`` None) or (G + lam_shift I)^{-1} v, per image row, in float64."""
        u, lam = self._rows()
        if lam_shift is None:
            keep = lam > self.rcond * lam.amax(dim=(-2, -1), keepdim=True).clamp(min=torch.finfo(lam.dtype).tiny)
            f = torch.where(keep, 1 / lam.clamp(min=torch.finfo(lam.dtype).tiny), torch.zeros_like(lam))
        else:
            f = 1 / (lam + lam_shift)
        u = _batch_param(u, v, "coil maps")
        f = _batch_param(f, v, "coil maps")
        v = v[:, 0].to(torch.complex128)
        z = (v[..., None, :].conj() @ u).conj()[..., 0, :]  # U^H v per row, as (v^H U)^H: no copy of conj(U)
        return (u @ (f.to(z.dtype) * z)[..., None])[..., 0][:, None]

    def _solve(self, r: Tensor, lam_shift: float | None) -> Tensor:
        """The correction d with (A^H A [+ lam]) d = A^H r, minimum norm (r: k-space ``[B, C, H, W]``)."""
        b = self.adjoint(r.to(torch.complex128))
        if self.decouples:
            return self._row_apply(b, lam_shift)
        if lam_shift is None:
            return conjugate_gradient(self.normal, b, max_iter=self.cg_max_iter, tol=1e-10)
        return conjugate_gradient(lambda v: self.normal(v) + lam_shift * v, b, max_iter=self.cg_max_iter, tol=1e-10)

    def pinv(self, y: Tensor) -> Tensor:
        """The minimum-norm least-squares image G^+ A^H y (exact per row for column masks, else CG).

        The last result is kept for the same ``y`` (the same tensor object, unmodified since): CCDF's
        data-consistency step asks for A^+ y of the same measurement at every step."""
        memo = self._pinv_memo
        if memo is not None and memo[0] is y and memo[1] == y._version and not torch.is_grad_enabled():
            return memo[2].clone()
        out = self._solve(_complex(y), None).to(_complex(y).dtype)
        if not out.requires_grad:
            self._pinv_memo = (y, y._version, out)
        return out

    def project(self, x: Tensor, y: Tensor) -> Tensor:
        """x + A^+ (y - A x), the residual and the solve in float64."""
        x = _complex(x)
        x64 = x.to(torch.complex128)
        return (x64 + self._solve(_complex(y).to(torch.complex128) - self(x64), None)).to(x.dtype)

    def prox(self, x: Tensor, y: Tensor, lam: float) -> Tensor:
        r""":math:`\arg\min_v \|A v - y\|^2 + \lambda \|v - x\|^2 = x + (A^H A + \lambda I)^{-1} A^H (y - A x)`
        (exact per row for column masks, else CG). ``lam = 0`` is :meth:`project`."""
        if not float(lam) >= 0:
            raise ValueError(f"prox needs lam >= 0, got {lam}")
        if lam == 0:
            return self.project(x, y)
        x = _complex(x)
        x64 = x.to(torch.complex128)
        return (x64 + self._solve(_complex(y).to(torch.complex128) - self(x64), float(lam))).to(x.dtype)


class CoilKSpace(KSpaceMask):
    r"""Per-coil k-space sampling of coil images: y_c = M F c_c, ``[B, C, H, W]`` -> ``[B, C, H, W]``.

    Closed forms as :class:`ccdf.operators.SingleCoilMRI` (adjoint = pinv = F^H M,
    ``project = F^H((1 - M) F c + M y)``), with a mask shared by the batch or one per image.
    With coil ``maps`` it also offers the SENSE-type correction of coil images,
    :meth:`sense_step` (score-MRI's hybrid sampler).

    Args:
        mask: ``[W]`` (with ``image_size``), ``[H, W]`` or ``[B, H, W]`` 0/1 k-space mask.
        image_size: ``(H, W)`` for a column mask.
        maps: optional coil maps ``[C, H, W]`` or ``[B, C, H, W]`` (complex).
    """

    def __init__(self, mask: Tensor, image_size: int | Sequence[int] | None = None, maps: Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("mask", _mask_buffer(mask, image_size))
        if maps is not None:
            maps = torch.as_tensor(maps)
            maps = maps[None] if maps.ndim == 3 else maps
            if maps.ndim != 4 or tuple(maps.shape[-2:]) != self.size:
                raise ValueError(
                    f"maps must be [C, H, W] or [B, C, H, W] with H x W = {self.size}, got {tuple(maps.shape)}"
                )
        self.register_buffer("maps", maps)

    def sense_step(self, c: Tensor, y: Tensor, lam: float) -> Tensor:
        r"""One relaxed SENSE data step on coil images: :math:`c \leftarrow c + \lambda\, S A^H (y - A \rho)`,
        :math:`\rho = \sum_c \bar S_c c_c / \sum_c |S_c|^2` the coil-combined image and A the SENSE operator.

        For coil images that follow the maps (c = S rho) this is the Landweber step
        :math:`\rho \leftarrow \rho + \lambda A^H (y - A\rho)` on the combined image, written back through
        the maps (score-MRI's ``kaczmarz``; see :mod:`ccdf.sampling.multicoil` for how its code differs).
        """
        if self.maps is None:
            raise ValueError("sense_step needs the coil maps (MultiCoilMRI.coil_operator() passes them)")
        sense = MultiCoilMRI(self.mask[:, 0] if self.mask.shape[0] > 1 else self.mask[0, 0], self.maps)
        rho = sense.combine(c)
        return c + lam * sense.coil_images(sense.adjoint(y - sense(rho)))

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.mask.shape[-2:])  # type: ignore[return-value]

    def select(self, idx: list[int]) -> CoilKSpace:
        per_image_maps = self.maps is not None and self.maps.shape[0] > 1
        if self.mask.shape[0] == 1 and not per_image_maps:
            return self
        mask = self.mask[idx, 0] if self.mask.shape[0] > 1 else self.mask[0, 0]
        return CoilKSpace(mask, maps=self.maps[idx] if per_image_maps else self.maps)

    def _m(self, x: Tensor) -> Tensor:
        check_spatial(x, self.size, "CoilKSpace")
        return _batch_param(self.mask, x, "masks").to(dtype=x.real.dtype)
