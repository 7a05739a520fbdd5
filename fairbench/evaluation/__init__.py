"""Prediction and what is computed from a trained run: predictions and reports, the run's data and
method rebuilt, cross-dataset evaluation and explanations. Imports no training code."""
