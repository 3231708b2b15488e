"""The trained models on photos: what ``python -m petvision.predict`` and the served models do.

A photo goes through exactly what a training image went through in the preprocess stage: decoded
by :func:`petvision.data.images.load_rgb` (any format and mode it accepts) and resized by
:func:`petvision.data.images.resize_image` to the model's input size with the interpolation its
training data was resized with. Then:

* the classifier gives P(dog) (its sigmoid output; P(cat) = 1 - P(dog));
* the segmentation model gives per-pixel class probabilities at its input size; they are
  resized bilinearly to the photo's own size before the argmax (a nearest-neighbour enlargement
  of a 64x64 label map would draw blocky outlines), and the labels written with the Oxford
  trimap values: 1 pet, 2 background, 3 border;
* on request, a Grad-CAM heatmap of the classifier's last convolutional block
  (:mod:`petvision.interpret.methods.gradcam`), overlaid on the photo at its own size.

Models are ``.keras`` files (the pipeline's ``models/`` by default) or MLflow model URIs
(``models:/petvision-classifier@champion``, ``runs:/<id>/model``, ``models:/<model id>``).
"""

from petvision.inference.command import run_predict
from petvision.inference.models import LoadedModel, load_model
from petvision.inference.photos import output_names, read_photo

__all__ = ["LoadedModel", "load_model", "output_names", "read_photo", "run_predict"]
