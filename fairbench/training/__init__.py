"""Training: one run from its configuration to its record (:func:`fairbench.training.run.execute`)."""
