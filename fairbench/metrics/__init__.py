"""Metrics: group-disaggregated fairness metrics, their uncertainty, and scoring of
prediction files. Plain numpy functions of stored per-sample predictions (see
docs/specs-notes.md, "Metrics"); fairlearn is only a test oracle."""

from fairbench.metrics.fairness import (
    accuracy,
    degree_of_bias,
    demographic_parity_difference,
    deo,
    deodds,
    dob_from_group_accuracies,
    equal_opportunity_difference,
    equalized_odds_difference,
    evaluate_predictions,
    expected_calibration_error,
    group_accuracies,
    group_expected_calibration_errors,
    group_rates,
    max_min_ratio,
    max_min_ratio_from_group_accuracies,
    worst_cell_accuracy,
    worst_group_accuracy,
)
from fairbench.metrics.scoring import read_predictions, score_file, score_frame
from fairbench.metrics.uncertainty import (
    BootstrapInterval,
    bootstrap_ci,
    mean_over_attributes,
    mean_t_interval,
    t_quantile,
)

__all__ = [
    "BootstrapInterval",
    "accuracy",
    "bootstrap_ci",
    "degree_of_bias",
    "demographic_parity_difference",
    "deo",
    "deodds",
    "dob_from_group_accuracies",
    "equal_opportunity_difference",
    "equalized_odds_difference",
    "evaluate_predictions",
    "expected_calibration_error",
    "group_accuracies",
    "group_expected_calibration_errors",
    "group_rates",
    "max_min_ratio",
    "max_min_ratio_from_group_accuracies",
    "mean_over_attributes",
    "mean_t_interval",
    "read_predictions",
    "score_file",
    "score_frame",
    "t_quantile",
    "worst_cell_accuracy",
    "worst_group_accuracy",
]
