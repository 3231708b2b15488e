"""The figures the stages report: :mod:`.metrics` (IoU, ROC AUC, the binary report, the Keras
metrics that training logs)."""
