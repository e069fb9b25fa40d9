"""The 8 symmetries of a square cutout (flips and transposes): training augments with them
and inference averages the networks over them.

The networks are not equivariant: their stride-2 sampling grids start at one corner, and
45 pixels are padded unevenly to 48. Each orientation of a cutout therefore carries a bias
of its own (the released regressor's centre: ~0.025" per axis, its sign set by the
orientation) that augmentation cancels only on average over the 8. A prediction on the
cutout as it is keeps its orientation's bias; the average over all 8 has none, and less
noise.
"""

from __future__ import annotations

import torch

# Orientation k: bit 2 transpose, bit 0 flip x, bit 1 flip y, in that order. x runs along
# columns (last axis) and y along rows, as in lensjobs.frame.
ORIENTATIONS = range(8)


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """``x`` (``(..., H, W)``, square) in orientation ``k``."""
    if k & 4:
        x = x.transpose(-1, -2)
    if k & 1:
        x = x.flip(-1)
    if k & 2:
        x = x.flip(-2)
    return x


def inverse(k: int) -> int:
    """The orientation that undoes ``k``: flips undo themselves, and after a transpose the
    x and y flips trade places."""
    if not k & 4:
        return k
    return 4 | (k & 1) << 1 | (k & 2) >> 1


def dihedral_targets(t: torch.Tensor, k: int) -> torch.Tensor:
    """Transform (theta_E, x, y, e1, e2) rows as :func:`dihedral` moves the image."""
    theta, x, y, e1, e2 = t.unbind(-1)
    if k & 4:
        x, y, e1 = y, x, -e1
    if k & 1:
        x, e2 = -x, -e2
    if k & 2:
        y, e2 = -y, -e2
    return torch.stack([theta, x, y, e1, e2], dim=-1)
