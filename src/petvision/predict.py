"""``python -m petvision.predict``: the trained models on your own photos (not a pipeline stage).

    python -m petvision.predict predict.input=path/to/photos predict.output=predictions
    python -m petvision.predict predict.input=[cat.jpg,dog.png] predict.gradcam=true
    python -m petvision.predict predict.classifier=models:/petvision-classifier@champion

Writes, per photo, the cat/dog probability, the predicted trimap as a PNG (1 pet, 2 background,
3 border) and its overlay on the photo at the photo's size, optionally a Grad-CAM overlay, and
the table of all of them (predictions.csv, predictions.json). See :mod:`petvision.inference`.
"""

from __future__ import annotations

from petvision.cli import stage
from petvision.inference import run_predict

if __name__ == "__main__":
    stage.main(run_predict, writes=[])
