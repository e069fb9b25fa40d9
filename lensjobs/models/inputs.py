"""What the networks see: cutouts normalised per band, padded to the encoder stride.

Each band is scaled by its own robust noise level, ``sigma_b = 1.4826 * MAD`` of the
``BORDER``-pixel frame of the cutout, and compressed with ``asinh(x / (3 sigma_b))`` so that
faint arcs and bright lens cores share one range whatever the depth or zero point. The
45x45 cutout is then zero-padded (zero is the background after normalisation) to a
multiple of the encoder stride instead of being resized, so no pixel is resampled.
"""

from __future__ import annotations

import numpy as np
import torch

BORDER = 4
ASINH_SOFTENING = 3.0
NORMALISATION = (
    f"per band: asinh(x / ({ASINH_SOFTENING:g} * sigma_b)), sigma_b = 1.4826 * MAD of the "
    f"{BORDER}-pixel border; zero padding to a multiple of the encoder stride"
)


def border_sigma(cutouts: np.ndarray) -> np.ndarray:
    """Robust per-band noise of ``(N, B, H, W)`` cutouts from their border pixels: ``(N, B)``."""
    mask = np.ones(cutouts.shape[-2:], dtype=bool)
    mask[BORDER:-BORDER, BORDER:-BORDER] = False
    edge = cutouts[..., mask]
    mad = np.median(np.abs(edge - np.median(edge, axis=-1, keepdims=True)), axis=-1)
    sigma = 1.4826 * mad
    # A flat border (a blank or synthetic cutout) would divide by zero.
    return np.where(sigma > 0, sigma, 1.0).astype(np.float32)


def normalise(cutouts: np.ndarray) -> torch.Tensor:
    """``(N, 3, H, W)`` flux cutouts to the networks' float32 input scale (unpadded)."""
    sigma = border_sigma(cutouts)[..., None, None]
    return torch.from_numpy(np.arcsinh(cutouts / (ASINH_SOFTENING * sigma)).astype(np.float32))


def padding(num_pix: int, stride: int) -> tuple[int, int]:
    """(before, after) padding that brings ``num_pix`` to a multiple of ``stride``."""
    total = -num_pix % stride
    return total // 2, total - total // 2


def pad(x: torch.Tensor, stride: int) -> torch.Tensor:
    before, after = padding(x.shape[-1], stride)
    return torch.nn.functional.pad(x, (before, after, before, after))


def crop(x: torch.Tensor, num_pix: int, stride: int) -> torch.Tensor:
    before, _ = padding(num_pix, stride)
    return x[..., before : before + num_pix, before : before + num_pix]


def coordinate_channels(
    batch: int, num_pix: int, stride: int, pixscale: float, scale: float
) -> torch.Tensor:
    """Two channels holding the lenstronomy-frame x and y of each (padded) pixel, divided by
    ``scale``: they let a pooled CNN report positions in the cutout frame."""
    before, after = padding(num_pix, stride)
    pix = (np.arange(-before, num_pix + after) - (num_pix - 1) / 2) * pixscale / scale
    y, x = np.meshgrid(pix, pix, indexing="ij")
    grid = torch.from_numpy(np.stack([x, y]).astype(np.float32))
    return grid.expand(batch, -1, -1, -1)
