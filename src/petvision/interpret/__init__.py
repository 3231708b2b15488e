"""What the convnets learned (the book's chapter 9.4) and whether the explanations hold, in two
roles:

- :mod:`.methods`: the computations, on Keras models and NumPy arrays, returning numbers and
  arrays (activations, filter patterns, class activation maps, their localization, faithfulness
  and sanity checks, the segmentation breakdown). They draw nothing.
- :mod:`.pipeline`: the visualize stage's work, which runs the methods on the pipeline's models
  and arrays and has :mod:`petvision.render` draw the results.

The models come from :mod:`petvision.models.loading` (and :mod:`petvision.models.imagenet`);
everything drawn or written for people is in :mod:`petvision.render`.
"""
