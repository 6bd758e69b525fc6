"""Generation: batched decoding of reports with sentence-level confidence, and its calibration.

    from radgen.generate import load_model, generate_reports
    rows = generate_reports(load_model("runs/iu/best"), studies, root="data/iu")

CLI: `radgen generate` and `radgen calibrate` (radgen.generate.cli).
"""

from radgen.generate.confidence import (
    calibrate,
    expected_calibration_error,
    fit_confidence_temperature,
    geometric_mean_probability,
    reliability_bins,
    sentence_confidences,
    sentence_correct,
)
from radgen.generate.decode import GenerationSettings, generate_reports, generate_to_file, load_model, resolve_model_dir

__all__ = [
    "GenerationSettings",
    "calibrate",
    "expected_calibration_error",
    "fit_confidence_temperature",
    "generate_reports",
    "generate_to_file",
    "geometric_mean_probability",
    "load_model",
    "reliability_bins",
    "resolve_model_dir",
    "sentence_confidences",
    "sentence_correct",
]
