"""petvision: chapter 9 of Deep Learning with Python as a reproducible DVC + MLflow + Hydra pipeline."""

__version__ = "0.1.0"
