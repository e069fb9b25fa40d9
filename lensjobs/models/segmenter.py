"""The segmenter: a segmentation_models_pytorch U-Net with 4 classes, softmax output.

Classes (as in the original notebooks): 0 arcs, 1 lens light, 2 other objects,
3 background. Trained with cross-entropy plus Dice on the softmax, and applied the same way.
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch

from lensjobs.labels import NUM_CLASSES
from lensjobs.models.dihedral import ORIENTATIONS, dihedral, inverse
from lensjobs.models.inputs import crop, pad
from lensjobs.models.store import ModelCard

# A ResNet-18 encoder cut after its second stage (stride 8): 45x45 cutouts pad to 48 only,
# and arcs (theta_E <= ~12 px) fit in its receptive field. Chosen by
# benchmarks/segmenter_encoders.py (accuracy per MB and per ms).
DEFAULT_ARCHITECTURE = {
    "encoder_name": "resnet18",
    "encoder_depth": 3,
    "decoder_channels": [48, 24, 16],
}


WHY = (
    "ResNet-18 encoder cut after its second stage (encoder_depth 3, stride 8): 45x45 "
    "cutouts need only 3 pixels of padding, arcs (theta_E up to ~12 px) fit in the "
    "receptive field, and the used weights are 3.3 MB. In benchmarks/segmenter_encoders.py "
    "(same data and epochs for each) deeper or larger encoders did not segment better per "
    "MB or per millisecond; figures in BENCHMARKS.md."
)


def build(card: ModelCard) -> torch.nn.Module:
    kwargs = dict(card.kwargs)
    kwargs["decoder_channels"] = tuple(kwargs["decoder_channels"])
    model = smp.Unet(
        encoder_weights=None, in_channels=len(card.bands), classes=NUM_CLASSES, **kwargs
    )
    # ResNet stages beyond encoder_depth never run; drop them so the weights file holds only
    # what is used (layer3/layer4 are 90 % of ResNet-18's parameters).
    for stage in range(kwargs["encoder_depth"], 5):
        if hasattr(model.encoder, f"layer{stage}"):
            setattr(model.encoder, f"layer{stage}", torch.nn.Identity())
    return model


def stride(kwargs: dict) -> int:
    return 2 ** kwargs["encoder_depth"]


def logits(model: torch.nn.Module, x: torch.Tensor, card: ModelCard) -> torch.Tensor:
    """Class logits ``(N, 4, H, W)`` for normalised, unpadded inputs."""
    return crop(model(pad(x, card.stride)), card.num_pix, card.stride)


def probabilities(model: torch.nn.Module, x: torch.Tensor, card: ModelCard) -> torch.Tensor:
    """Class probabilities ``(N, 4, H, W)``: the softmax averaged over the 8 orientations of
    the cutout (:mod:`lensjobs.models.dihedral`)."""
    total = torch.zeros((), device=x.device)
    for k in ORIENTATIONS:
        total = total + dihedral(logits(model, dihedral(x, k), card).float().softmax(1), inverse(k))
    return total / len(ORIENTATIONS)
