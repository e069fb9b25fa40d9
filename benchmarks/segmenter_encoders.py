"""Compare U-Net encoders for the segmenter: accuracy per MB and per millisecond.

    .venv/bin/python benchmarks/segmenter_encoders.py TRAIN.fits TEST.fits [--epochs 3]

Each candidate is trained the same short way (same data, seed and epochs) and scored on
the held-out file: mean IoU over the 4 classes, weights size, and CPU inference time per
45x45 cutout (batch 512, one thread, so that candidates compare alike).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from lensjobs.models import segmenter
from lensjobs.models.store import load_model
from lensjobs.train import TrainSettings, train

CANDIDATES = {
    "resnet18 d3": {
        "encoder_name": "resnet18",
        "encoder_depth": 3,
        "decoder_channels": [48, 24, 16],
    },
    "resnet34 d3": {
        "encoder_name": "resnet34",
        "encoder_depth": 3,
        "decoder_channels": [48, 24, 16],
    },
    "mobilenet_v2 d3": {
        "encoder_name": "mobilenet_v2",
        "encoder_depth": 3,
        "decoder_channels": [48, 24, 16],
    },
}


def ms_per_cutout(model: torch.nn.Module, card, n: int = 512) -> float:
    x = torch.randn(n, 3, card.num_pix, card.num_pix)
    with torch.inference_mode():
        segmenter.logits(model, x[:64], card)
        best = min(_timed(lambda: segmenter.logits(model, x, card)) for _ in range(3))
    return 1000 * best / n


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("train", type=Path)
    parser.add_argument("test", type=Path)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| encoder | mean IoU | IoU arcs / lens / other / bkg | MB | ms/cutout | train min |")
    print("|---|---|---|---|---|---|")
    for name, architecture in CANDIDATES.items():
        with tempfile.TemporaryDirectory() as tmp:
            settings = TrainSettings(epochs=args.epochs, architecture=architecture, seed=0)
            card = train("segmenter", [args.train], args.test, Path(tmp), settings)
            model, card = load_model("segmenter", segmenter.build, Path(tmp))
            size = (Path(tmp) / "segmenter.safetensors").stat().st_size / 1e6
            ms = ms_per_cutout(model, card)
        iou = " / ".join(f"{v:.3f}" for v in card.metrics["iou_per_class"])
        print(
            f"| {name} | {card.metrics['mean_iou']:.3f} | {iou} | {size:.1f} | {ms:.2f} | "
            f"{card.training['minutes']:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
