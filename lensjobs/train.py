"""Training of the segmenter and the regressor on ``lensjobs simulate`` output.

Both use the same loop: AdamW with a one-cycle learning-rate schedule, dihedral
augmentation (the 8 flips and transposes of the square cutout, with the regressor's
targets transformed to match),
a validation split with early stopping on the validation score, and the best epoch's
weights kept. Metrics for the model card come from a held-out test file simulated with
another seed. Deterministic for a seed on the CPU.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import segmentation_models_pytorch as smp
import torch
from astropy.io import fits
from astropy.table import Table
from pydantic import BaseModel, Field

from lensjobs.catalog import BANDS
from lensjobs.models import regressor, segmenter
from lensjobs.models.dihedral import dihedral, dihedral_targets
from lensjobs.models.inputs import NORMALISATION, normalise
from lensjobs.models.store import Kind, ModelCard, WeightsError, load_model, save_model

ONE_SIGMA = 0.6827  # the share of a Gaussian within 1 sigma
# The regressor's targets (theta_E, x, y, e1, e2) that share a sigma factor.
SYMMETRIC_TARGETS = ([0], [1, 2], [3, 4])
GRAD_CLIP = 1.0  # max gradient norm: keeps one bad batch from undoing an epoch


class TrainSettings(BaseModel):
    seed: int = 0
    epochs: int = Field(30, ge=0, description="0: re-calibrate the --init weights, no training")
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    patience: int = Field(4, ge=1, description="epochs without improvement before stopping")
    val_frac: float = Field(0.1, gt=0, lt=1)
    max_minutes: float | None = Field(None, gt=0, description="stop after this wall time")
    architecture: dict[str, Any] | None = None


@dataclass
class SimulatedSet:
    """A simulated catalogue in memory: normalised inputs, labels and truth."""

    path: Path
    x: torch.Tensor  # (N, 3, H, W) normalised
    labels: torch.Tensor  # (N, H, W) int64
    truth: np.ndarray  # TRUTH rows
    pixscale: float

    @property
    def n(self) -> int:
        return len(self.x)


class TrainingDataError(ValueError):
    """Training data that cannot be used; ``str(err)`` is one line for the user."""


def _load_one(path: Path) -> SimulatedSet:
    """One ``lensjobs simulate`` file, whole, in memory."""
    try:
        with fits.open(path) as hdul:
            images = np.asarray(hdul["IMAGES"].data, dtype=np.float32)
            labels = torch.from_numpy(np.asarray(hdul["LABELS"].data, dtype=np.int64))
            truth = Table.read(hdul["TRUTH"]).as_array()  # FITS logicals as bool
            pixscale = float(hdul["IMAGES"].header["PIXSCALE"])
    except FileNotFoundError:
        raise TrainingDataError(
            f"{path}: no such file; make one with 'lensjobs simulate'"
        ) from None
    except (OSError, KeyError, TypeError):
        raise TrainingDataError(
            f"{path}: not a 'lensjobs simulate' file (needs IMAGES, TRUTH and LABELS "
            "extensions); make one with 'lensjobs simulate'"
        ) from None
    return SimulatedSet(path, normalise(images), labels, truth, pixscale)


def load_simulated(*paths: Path) -> SimulatedSet:
    """``lensjobs simulate`` files, whole, in memory and joined (~40 kB per system)."""
    sets = [_load_one(p) for p in paths]
    first = sets[0]
    for other in sets[1:]:
        if other.x.shape[1:] != first.x.shape[1:] or other.pixscale != first.pixscale:
            raise TrainingDataError(
                f"{other.path}: cutouts of another size or pixel scale than {first.path}'s; "
                "train on files simulated on one grid"
            )
        if other.truth.dtype.names != first.truth.dtype.names:
            raise TrainingDataError(
                f"{other.path}: TRUTH columns differ from {first.path}'s; simulate both "
                "with the same lensjobs version"
            )
    if len(sets) == 1:
        return first
    return SimulatedSet(
        first.path,
        torch.cat([d.x for d in sets]),
        torch.cat([d.labels for d in sets]),
        np.concatenate([d.truth for d in sets]),
        first.pixscale,
    )


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def mean_iou(confusion: np.ndarray) -> tuple[float, list[float]]:
    tp = np.diag(confusion).astype(float)
    union = confusion.sum(0) + confusion.sum(1) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), 1.0)
    return float(iou.mean()), [float(v) for v in iou]


class Task:
    """What differs between the two networks: inputs, loss and score."""

    kind: Kind

    def card(self, data: SimulatedSet, settings: TrainSettings) -> ModelCard:
        raise NotImplementedError

    def rows(self, data: SimulatedSet) -> np.ndarray:
        return np.arange(data.n)

    def loss(
        self,
        model: torch.nn.Module,
        card: ModelCard,
        x: torch.Tensor,
        rows: np.ndarray,
        data: SimulatedSet,
        k: int,
    ) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(
        self, model: torch.nn.Module, card: ModelCard, data: SimulatedSet, rows: np.ndarray
    ) -> dict[str, Any]:
        """Metrics on ``rows``; ``score`` is what early stopping maximises."""
        raise NotImplementedError

    def calibrate(
        self, model: torch.nn.Module, card: ModelCard, data: SimulatedSet, rows: np.ndarray
    ) -> ModelCard:
        """The card of the trained network, its uncertainties calibrated on ``rows``."""
        return card


def _batches(rows: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


class SegmenterTask(Task):
    kind: Kind = "segmenter"

    def __init__(self) -> None:
        self.dice = smp.losses.DiceLoss(mode="multiclass", from_logits=True)
        self.cross_entropy = torch.nn.CrossEntropyLoss()

    def card(self, data: SimulatedSet, settings: TrainSettings) -> ModelCard:
        kwargs = settings.architecture or segmenter.DEFAULT_ARCHITECTURE
        return ModelCard(
            kind="segmenter",
            library="segmentation_models_pytorch",
            architecture="Unet",
            kwargs=kwargs,
            stride=segmenter.stride(kwargs),
            num_pix=data.x.shape[-1],
            pixscale=data.pixscale,
            bands=list(BANDS),
            normalisation=NORMALISATION,
            why=segmenter.WHY,
        )

    def loss(self, model, card, x, rows, data, k):
        target = dihedral(data.labels[rows], k).to(x.device)
        out = segmenter.logits(model, x, card)
        return self.cross_entropy(out, target) + self.dice(out, target)

    @torch.inference_mode()
    def evaluate(self, model, card, data, rows):
        dev = next(model.parameters()).device
        confusion = np.zeros((segmenter.NUM_CLASSES,) * 2, dtype=np.int64)
        for batch in _batches(rows, 256):
            pred = segmenter.probabilities(model, data.x[batch].to(dev), card).argmax(1).cpu()
            truth = data.labels[batch]
            confusion += np.bincount(
                (truth * segmenter.NUM_CLASSES + pred).ravel().numpy(),
                minlength=segmenter.NUM_CLASSES**2,
            ).reshape(confusion.shape)
        miou, per_class = mean_iou(confusion)
        return {"score": miou, "mean_iou": miou, "iou_per_class": per_class, "n": len(rows)}


class RegressorTask(Task):
    kind: Kind = "regressor"

    def rows(self, data: SimulatedSet) -> np.ndarray:
        # theta_E and the arcs' geometry exist only for lenses; non-lenses are flagged by the
        # segmenter (no arc pixels), not by the regressor.
        return np.flatnonzero(data.truth["IS_LENS"])

    def targets(self, data: SimulatedSet, rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(
            np.stack([data.truth[c][rows] for c in regressor.TRUTH_COLUMNS], axis=-1).astype(
                np.float32
            )
        )

    def card(self, data: SimulatedSet, settings: TrainSettings) -> ModelCard:
        t = self.targets(data, self.rows(data)).numpy()
        half_width = (data.x.shape[-1] - 1) / 2 * data.pixscale
        return ModelCard(
            kind="regressor",
            library="timm",
            architecture="EfficientNet",
            kwargs=settings.architecture or regressor.DEFAULT_ARCHITECTURE,
            stride=regressor.STRIDE,
            num_pix=data.x.shape[-1],
            pixscale=data.pixscale,
            bands=list(BANDS),
            normalisation=NORMALISATION,
            why=regressor.WHY,
            targets=regressor.TARGETS,
            # Centre and ellipticities are symmetric about 0 under the dihedral augmentation.
            target_mean=[float(t[:, 0].mean()), 0.0, 0.0, 0.0, 0.0],
            target_scale=[float(v) for v in t.std(axis=0)],
            coordinate_scale=half_width,
        )

    def loss(self, model, card, x, rows, data, k):
        target = dihedral_targets(self.targets(data, rows), k).to(x.device)
        mean, log_var = regressor.raw_outputs(model, x, card)
        centre = torch.tensor(card.target_mean, device=x.device)
        scale = torch.tensor(card.target_scale, device=x.device)
        z = (target - centre) / scale
        # The means learn by squared error and the variances by the Gaussian NLL of the
        # (detached) residuals: the plain joint NLL lets small variances blow the mean's
        # gradients up early in training and the network never recovers.
        squared = (z - mean) ** 2
        nll = 0.5 * (log_var + squared.detach() * torch.exp(-log_var))
        return (squared + nll).mean()

    @torch.inference_mode()
    def _errors(self, model, card, data, rows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Errors of the means, the sigmas and the truths on ``rows``, ``(N, T)`` each."""
        dev = next(model.parameters()).device
        means, sigmas = [], []
        for batch in _batches(rows, 256):
            mean, sigma = regressor.predict(model, data.x[batch].to(dev), card)
            means.append(mean.float().cpu())
            sigmas.append(sigma.float().cpu())
        truth = self.targets(data, rows).numpy()
        return torch.cat(means).numpy() - truth, torch.cat(sigmas).numpy(), truth

    def calibrate(self, model, card, data, rows):
        # The Gaussian NLL learns the shape of the errors better than their scale, which
        # comes out conservative for some targets and optimistic for others: one factor per
        # target puts 68.3 % of the validation truths within 1 sigma. The two coordinates of
        # the centre, and e1 and e2, trade places when a cutout turns: one factor each pair,
        # so that a turned cutout's sigmas are its sigmas turned.
        error, sigma, _ = self._errors(
            model, card.model_copy(update={"sigma_scale": []}), data, rows
        )
        z = np.abs(error) / sigma
        factors = [0.0] * z.shape[1]
        for group in SYMMETRIC_TARGETS:
            factor = round(float(np.quantile(z[:, group], ONE_SIGMA)), 4)
            for j in group:
                factors[j] = factor
        return card.model_copy(update={"sigma_scale": factors})

    def evaluate(self, model, card, data, rows):
        error, sigma, truth = self._errors(model, card, data, rows)
        z = np.abs(error) / sigma
        nll = float(np.mean(np.log(sigma) + 0.5 * z**2))
        return {
            "score": -nll,
            "nll": nll,
            "median_abs_dtheta_E": float(np.median(np.abs(error[:, 0]))),
            "median_rel_dtheta_E": float(np.median(np.abs(error[:, 0]) / truth[:, 0])),
            "median_centre_error": float(np.median(np.hypot(error[:, 1], error[:, 2]))),
            "median_abs_de1": float(np.median(np.abs(error[:, 3]))),
            "median_abs_de2": float(np.median(np.abs(error[:, 4]))),
            "within_1sigma": {n: float(np.mean(z[:, j] < 1)) for j, n in enumerate(card.targets)},
            "within_2sigma": {n: float(np.mean(z[:, j] < 2)) for j, n in enumerate(card.targets)},
            "n": len(rows),
        }


TASKS: dict[str, Callable[[], Task]] = {"segmenter": SegmenterTask, "regressor": RegressorTask}


def train(
    kind: Kind,
    data_paths: Sequence[Path],
    test_path: Path | None,
    out_dir: Path,
    settings: TrainSettings,
    report: Callable[[str, float], None] | None = None,
    log: Callable[[str], None] | None = None,
    init: Path | None = None,
) -> ModelCard:
    """Train one network and write its weights and model card to ``out_dir``.

    ``init``: a directory with weights and a card of this kind to start from (fine-tuning);
    their architecture and normalisation are kept. ``report(text, fraction_done)`` is called
    after every batch, ``log(line)`` after every epoch.
    """
    started = time.time()
    torch.manual_seed(settings.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    rng = np.random.default_rng(settings.seed)
    task = TASKS[kind]()
    data = load_simulated(*data_paths)
    test = load_simulated(test_path) if test_path is not None else None  # fail early
    build = segmenter.build if kind == "segmenter" else regressor.build
    if init is None:
        card = task.card(data, settings)
        model = build(card)
    else:
        try:
            model, card = load_model(kind, build, init)
        except WeightsError as error:
            raise TrainingDataError(str(error)) from None
        if card.num_pix != data.x.shape[-1] or card.pixscale != data.pixscale:
            raise TrainingDataError(
                f"{init}: the {kind} was trained on another grid than {data.path}'s; "
                "fine-tune on cutouts of its grid"
            )
        # Validation during fine-tuning scores the raw sigmas, as calibration expects.
        card = card.model_copy(update={"sigma_scale": []})
    dev = device()
    model = model.to(dev)

    rows = rng.permutation(task.rows(data))
    n_val = max(1, round(settings.val_frac * len(rows)))
    val_rows, train_rows = np.sort(rows[:n_val]), rows[n_val:]
    if settings.epochs == 0:
        return _recalibrate(task, model, card, data, data_paths, val_rows, test, test_path, out_dir)
    steps_per_epoch = math.ceil(len(train_rows) / settings.batch_size)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser,
        max_lr=settings.learning_rate,
        total_steps=settings.epochs * steps_per_epoch,
        pct_start=0.1,
    )
    best: dict[str, Any] = {"score": -math.inf}
    best_state: dict[str, torch.Tensor] = {}
    history = []
    stale = 0
    epoch = 0
    stopped = "epochs done"
    for epoch in range(1, settings.epochs + 1):
        model.train()
        total, seen = 0.0, 0
        for step, batch in enumerate(_batches(rng.permutation(train_rows), settings.batch_size)):
            k = int(rng.integers(8))
            x = dihedral(data.x[batch], k).to(dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                loss = task.loss(model, card, x, batch, data, k)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            optimiser.step()
            schedule.step()
            total += loss.item() * len(batch)
            seen += len(batch)
            if report:
                report(
                    f"epoch {epoch}/{settings.epochs} loss {total / seen:.4f} "
                    f"best val {best['score']:.4f}",
                    ((epoch - 1) * steps_per_epoch + step + 1)
                    / (settings.epochs * steps_per_epoch),
                )
        model.eval()
        metrics = task.evaluate(model, card, data, val_rows)
        history.append({"epoch": epoch, "train_loss": total / seen, "val_score": metrics["score"]})
        if log:
            scalars = ", ".join(
                f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float) and k != "score"
            )
            log(
                f"epoch {epoch}: train loss {total / seen:.4f}, val {scalars}, "
                f"{(time.time() - started) / 60:.1f} min"
            )
        if metrics["score"] > best["score"]:
            best, stale = metrics, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            best["epoch"] = epoch
        else:
            stale += 1
        if stale >= settings.patience:
            stopped = f"no improvement in {settings.patience} epochs"
            break
        if settings.max_minutes and time.time() - started > 60 * settings.max_minutes:
            stopped = f"time limit of {settings.max_minutes:g} minutes"
            break

    model.load_state_dict(best_state)
    model.eval()
    card = task.calibrate(model, card, data, val_rows)
    card = card.model_copy(
        update={
            "training": {
                "data": [p.name for p in data_paths],
                "init": init.name if init is not None else None,
                "n_systems": data.n,
                "n_train": len(train_rows),
                "n_val": len(val_rows),
                "seed": settings.seed,
                "settings": settings.model_dump(),
                "device": dev.type,
                "epochs_run": epoch,
                "best_epoch": best["epoch"],
                "stopped": stopped,
                "minutes": round((time.time() - started) / 60, 2),
                "val_metrics": {k: v for k, v in best.items() if k not in ("score", "epoch")},
                "history": history,
            },
            "metrics": _test_metrics(task, model, card, test, test_path),
        }
    )
    return save_model(model.cpu(), card, out_dir)


def _test_metrics(
    task: Task,
    model: torch.nn.Module,
    card: ModelCard,
    test: SimulatedSet | None,
    test_path: Path | None,
) -> dict[str, Any]:
    if test is None or test_path is None:
        return {}
    metrics = task.evaluate(model, card, test, task.rows(test))
    metrics.pop("score")
    return {**metrics, "data": test_path.name}


def _recalibrate(
    task: Task,
    model: torch.nn.Module,
    card: ModelCard,
    data: SimulatedSet,
    data_paths: Sequence[Path],
    val_rows: np.ndarray,
    test: SimulatedSet | None,
    test_path: Path | None,
    out_dir: Path,
) -> ModelCard:
    """``--epochs 0``: the weights as they are, their uncertainties calibrated and their
    scores taken again on the validation split they were trained with (the same data and
    seed give the same split), as after a change in how the networks are applied."""
    if not card.training:
        raise TrainingDataError("--epochs 0 re-calibrates trained weights: name them with --init")
    model.eval()
    card = task.calibrate(model, card, data, val_rows)
    scores = task.evaluate(model, card, data, val_rows)
    scores.pop("score")
    recalibrated = {"data": [p.name for p in data_paths], "n_val": len(val_rows), **scores}
    return save_model(
        model.cpu(),
        card.model_copy(
            update={
                "training": {**card.training, "recalibrated": recalibrated},
                "metrics": _test_metrics(task, model, card, test, test_path),
            }
        ),
        out_dir,
    )
