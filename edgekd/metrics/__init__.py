"""Evaluation metrics that do not depend on a model: anomaly-detection scores and thresholds."""
