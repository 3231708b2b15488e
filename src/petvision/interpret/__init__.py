"""What the convnets learned (the book's part 3): intermediate activations, filter patterns,
Grad-CAM with a localization score against the pet masks, and segmentation views.

Plain library functions on Keras models and NumPy arrays; the ``visualize`` stage composes them.
"""
