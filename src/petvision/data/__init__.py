"""Data: the dataset layout and its sources (generated or downloaded), the image loader, the
splits, the .npy arrays and the batches that feed training."""
