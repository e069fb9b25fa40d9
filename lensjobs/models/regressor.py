"""The regressor: a timm EfficientNet predicting lens parameters with uncertainties.

Outputs per candidate: theta_E, centre x and y (lenstronomy frame of the cutout, arcsec),
e1, e2, each as a Gaussian mean and log-variance, trained with the Gaussian negative
log-likelihood. Besides g, r, i the network sees two coordinate channels (x and y of each
pixel), so that a pooled CNN can report positions.
"""

from __future__ import annotations

import timm
import torch

from lensjobs.models.dihedral import ORIENTATIONS, dihedral, dihedral_targets, inverse
from lensjobs.models.inputs import coordinate_channels, pad
from lensjobs.models.store import ModelCard

TARGETS = ["theta_E", "center_x", "center_y", "e1", "e2"]
TRUTH_COLUMNS = ["THETA_E", "CENTER_X", "CENTER_Y", "E1", "E2"]
DEFAULT_ARCHITECTURE = {"model_name": "efficientnet_b0", "drop_rate": 0.1}
STRIDE = 16  # 45 -> 48; any multiple of the stem stride works with global pooling
LOG_VAR_RANGE = (-9.0, 3.0)  # sigma from 1 % to 4.5x the target's spread


WHY = (
    "EfficientNet-B0 (the largest the issue allows, 4.0 M parameters, 16 MB) at the native "
    "45x45 scale padded to 48: ~1.3 ms per cutout on 2 CPU cores. Two coordinate channels "
    "give the pooled network the cutout frame, for the centre."
)


def build(card: ModelCard) -> torch.nn.Module:
    model = timm.create_model(
        pretrained=False,
        in_chans=len(card.bands) + 2,
        num_classes=2 * len(card.targets),
        **card.kwargs,
    )
    # A zero head starts every prediction at the training mean with unit variance; timm's
    # default head, behind batch-normalised 2x2 features, starts at several sigma and the
    # first steps' huge losses wreck training.
    head = model.get_classifier()
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    return model


def inputs(x: torch.Tensor, card: ModelCard) -> torch.Tensor:
    coords = coordinate_channels(
        x.shape[0], card.num_pix, card.stride, card.pixscale, card.coordinate_scale
    ).to(x.device, x.dtype)
    return torch.cat([pad(x, card.stride), coords], dim=1)


def raw_outputs(
    model: torch.nn.Module, x: torch.Tensor, card: ModelCard
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised means and log-variances ``(N, T)`` each."""
    out = model(inputs(x, card)).float()
    mean, log_var = out.chunk(2, dim=1)
    return mean, log_var.clamp(*LOG_VAR_RANGE)


def predict(
    model: torch.nn.Module, x: torch.Tensor, card: ModelCard
) -> tuple[torch.Tensor, torch.Tensor]:
    """Means and standard deviations ``(N, T)`` in physical units (arcsec for angles), each
    the average over the 8 orientations of the cutout (:mod:`lensjobs.models.dihedral`), the
    deviations calibrated by the card's ``sigma_scale``."""
    centre = torch.tensor(card.target_mean, device=x.device)
    scale = torch.tensor(card.target_scale, device=x.device)
    means, sigmas = [], []
    for k in ORIENTATIONS:
        mean, log_var = raw_outputs(model, dihedral(x, k), card)
        back = inverse(k)
        means.append(dihedral_targets(mean * scale + centre, back))
        # Widths only swap between x and y; the signs dihedral_targets gives them mean nothing.
        sigmas.append(dihedral_targets(torch.exp(0.5 * log_var) * scale, back).abs())
    sigma = torch.stack(sigmas).mean(0)
    if card.sigma_scale:
        sigma = sigma * torch.tensor(card.sigma_scale, device=x.device)
    return torch.stack(means).mean(0), sigma
