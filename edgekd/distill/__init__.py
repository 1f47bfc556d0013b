"""Distillation: loss registry, feature hooks, distiller methods and the training engine."""
