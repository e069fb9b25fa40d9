"""Weights as safetensors beside a JSON model card; never pickles.

The card says how to rebuild the network (architecture and its arguments), how its input
is normalised, what it was trained on and how well it does. Loading checks the weights
against the card's checksum and architecture and fails with one line when they disagree.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ValidationError

from lensjobs.catalog import CandidateCatalog, CatalogError
from lensjobs.files import atomic_write

if TYPE_CHECKING:  # torch is imported where weights are read or written: validate needs none
    import torch

RELEASED = Path(__file__).parent / "released"
Kind = Literal["segmenter", "regressor"]
# A pixel scale this close to the networks' moves their theta_E prior by <= 1 %, well within
# what the fit corrects (DES 0.2637 vs 0.263 "/px); other scales are refused.
PIXSCALE_RTOL = 0.01


class WeightsError(ValueError):
    """Weights that cannot be used; ``str(err)`` is one line for the user."""


class ModelCard(BaseModel):
    kind: Kind
    library: str
    architecture: str
    kwargs: dict[str, Any]
    stride: int
    num_pix: int
    pixscale: float
    bands: list[str]
    normalisation: str
    targets: list[str] = []
    target_mean: list[float] = []
    target_scale: list[float] = []
    coordinate_scale: float = 1.0
    # Factors on the predicted sigmas, set after training so that 68.3 % of validation truths
    # fall within 1 sigma per target; empty: none.
    sigma_scale: list[float] = []
    why: str = ""
    training: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    weights_sha256: str = ""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_model(model: torch.nn.Module, card: ModelCard, directory: Path) -> ModelCard:
    """Write ``<kind>.safetensors`` and ``<kind>.json`` into ``directory``; the card written."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / f"{card.kind}.safetensors"
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(weights, lambda tmp: save_file(state, str(tmp), metadata={"kind": card.kind}))
    card = card.model_copy(update={"weights_sha256": _sha256(weights)})
    text = json.dumps(card.model_dump(), indent=2) + "\n"
    atomic_write(directory / f"{card.kind}.json", lambda tmp: tmp.write_text(text))
    return card


def read_card(kind: Kind, directory: Path | None = None) -> ModelCard:
    path = (directory or RELEASED) / f"{kind}.json"
    try:
        card = ModelCard.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise WeightsError(
            f"{path}: no model card; train one with 'lensjobs train {kind}' or restore the "
            "released files"
        ) from None
    except ValidationError as err:
        raise WeightsError(
            f"{path}: not a valid model card ({err.error_count()} problems); restore it"
        ) from None
    if card.kind != kind:
        raise WeightsError(f"{path}: model card is for a {card.kind}, not a {kind}")
    return card


def require_grid(catalog: CandidateCatalog, cards: list[ModelCard] | None = None) -> None:
    """Refuse cutouts of another size or pixel scale than the networks were trained on: their
    priors would come out in the wrong units, or not at all."""
    for card in cards or [read_card("segmenter"), read_card("regressor")]:
        size = catalog.num_pix == card.num_pix
        scale = abs(catalog.pixscale / card.pixscale - 1) <= PIXSCALE_RTOL
        if not (size and scale):
            n = catalog.num_pix
            raise CatalogError(
                f"{catalog.path}[{catalog.image_hdu}]: cutouts are {n}x{n} px at "
                f"{catalog.pixscale:g} arcsec/px, but the {card.kind} was trained on "
                f"{card.num_pix}x{card.num_pix} px at {card.pixscale:g} arcsec/px; cut or "
                "resample the cutouts onto that grid and set PIXSCALE, then submit again"
            )


def load_model(
    kind: Kind, build: Any, directory: Path | None = None
) -> tuple[torch.nn.Module, ModelCard]:
    """Rebuild the network from its card with ``build(card)`` and load its weights."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    card = read_card(kind, directory)
    path = (directory or RELEASED) / f"{kind}.safetensors"
    fix = f"re-train with 'lensjobs train {kind}' or restore the released files"
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file; {fix}")
    if card.weights_sha256 and _sha256(path) != card.weights_sha256:
        raise WeightsError(f"{path}: checksum differs from its model card; {fix}")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError):
        raise WeightsError(f"{path}: not a readable safetensors file; {fix}") from None
    model = build(card)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0].rstrip(":")
        raise WeightsError(
            f"{path}: weights do not fit the architecture of its card ({first}); {fix}"
        ) from None
    return model.eval(), card
