"""Data-consistency (DC) steps between reverse steps.

A DC step is a callable ``dc(x_t, y, t, generator) -> x_t`` built by a factory from the
operator and the schedule. The default ``project`` follows score-SDE's ``inpaint_update_fn``
and CCDF: diffuse the measurement to the level of x_t and apply the operator's orthogonal
projection (replacement for masks, k-space replacement for MRI, low-pass replacement for SR).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from ccdf.operators.base import Operator
from ccdf.schedules.base import Schedule, forward_diffuse
from ccdf.utils.rng import Generator

DataConsistency = Callable[[Tensor, Tensor, Tensor, Generator], Tensor]


def make_projection_dc(op: Operator, schedule: Schedule) -> DataConsistency:
    """x_t <- P_{y_t}(x_t), with y_t = A(a_t A^+ y + s_t z) the measurement diffused to level t.

    At t = 0 (sigma = 0 for both VP and VE) this sets A x = y exactly.
    """

    def dc(x_t: Tensor, y: Tensor, t: Tensor, generator: Generator) -> Tensor:
        y_t = op(forward_diffuse(schedule, op.pinv(y), t, generator))
        return op.project(x_t, y_t)

    return dc


def make_identity_dc(op: Operator, schedule: Schedule) -> DataConsistency:
    """No data consistency: the unconditional sampler."""

    def dc(x_t: Tensor, y: Tensor, t: Tensor, generator: Generator) -> Tensor:
        return x_t

    return dc


DC_FACTORIES: dict[str, Callable[[Operator, Schedule], DataConsistency]] = {
    "project": make_projection_dc,
    "none": make_identity_dc,
}
