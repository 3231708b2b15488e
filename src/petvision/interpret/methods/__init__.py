"""The interpretation methods: plain functions on Keras models and NumPy arrays.

:mod:`.activations` (9.4.1), :mod:`.filters` (9.4.2, gradient ascent), :mod:`.gradcam` (9.4.3,
the book's Grad-CAM and the other class activation map recipes as options of it, at any layer),
:mod:`.localization` (the maps against the pet masks, the default method by stride),
:mod:`.faithfulness` (deletion and insertion, trimap occlusion), :mod:`.sanity` (cascading
randomization), :mod:`.segmentation` (masks, IoU per image, class and pet size, errors by kind);
:mod:`.gradients` is the one place that asks the Keras backend for a gradient.
"""
