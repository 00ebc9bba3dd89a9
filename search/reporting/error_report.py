"""Where a final model fails, written once from its final evaluation on the test split:
``error_analysis.json`` (confused pairs, calibration, per-class accuracy, the most
confidently wrong images), ``wrong_images.png``, ``per_class_accuracy.png``,
``reliability.png`` and ``gradcam.png``. Used by the final retrain (its MLflow run's
artifacts, for the first seed's model), by ``train --test --out`` and read back by ``report``.
Never during a search: only a test-split evaluation carries what this needs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from search.reporting.error_analysis import JSON_NAME, ErrorAnalysis, analyse, write_json
from search.reporting.error_figures import per_class_png, reliability_png, wrong_images_png

if TYPE_CHECKING:
    from search.config import TrialConfig
    from search.training import Dataset, TrainResult

# file name -> caption, in report order
FIGURES = {
    "wrong_images.png": "Most confidently wrong test images",
    "gradcam.png": "Grad-CAM of the predicted class on those images",
    "per_class_accuracy.png": "Per-class test accuracy",
    "reliability.png": "Reliability diagram",
}
GRADCAM_IMAGES = 8


def test_analysis(result: TrainResult, dataset: Dataset) -> ErrorAnalysis | None:
    """The analysis of a final run's test evaluation; None for any other evaluation."""
    final = result.final
    if final.split != "test" or final.probabilities is None:
        return None
    return analyse(final.probabilities, dataset.test_y, dataset.classes)


def write_error_analysis(
    cfg: TrialConfig, result: TrainResult, dataset: Dataset, folder: Path
) -> list[Path]:
    """The analysis files of one final model into ``folder`` (none for a validation run)."""
    analysis = test_analysis(result, dataset)
    if analysis is None:
        return []
    probabilities, labels = result.final.probabilities, dataset.test_y
    wrong = analysis.mistake_indices
    paths = [
        write_json(analysis, folder / JSON_NAME),
        wrong_images_png(
            dataset.test_x, labels, probabilities, wrong, dataset.classes,
            folder / "wrong_images.png",
        ),
        per_class_png(
            analysis.per_class_accuracy, dataset.classes, folder / "per_class_accuracy.png"
        ),
        reliability_png(analysis.bins, analysis.ece, folder / "reliability.png"),
        _gradcam(cfg, result, dataset, wrong[:GRADCAM_IMAGES], folder / "gradcam.png"),
    ]  # fmt: skip
    return [p for p in paths if p is not None]


def _gradcam(
    cfg: TrialConfig, result: TrainResult, dataset: Dataset, wrong, path: Path
) -> Path | None:
    """Grad-CAM over the most confidently wrong images, on the trained weights (CPU)."""
    from search.reporting.gradcam import gradcam_png
    from search.training.packaged import packaged_model

    if len(wrong) == 0:
        return None
    mean, std = dataset.mean_std
    # the trained model on the CPU in eval mode, as the packaged MLflow model holds it
    packaged = packaged_model(cfg, dataset.num_classes, result.state_dict, mean, std)
    predictions = result.final.probabilities[wrong].argmax(axis=1)
    return gradcam_png(
        packaged.model,
        dataset.test_x[wrong],
        dataset.test_y[wrong],
        predictions,
        mean,
        std,
        dataset.classes,
        path,
        device="cpu",
        n=len(wrong),
        name=cfg.model.name,
        resize=packaged.resize,
    )
