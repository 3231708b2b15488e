"""petvision: chapter 9 of Deep Learning with Python as a reproducible DVC + MLflow + Hydra pipeline."""

import gc
import sys

__version__ = "0.1.0"

# `python -m petvision.<stage>` imports TensorFlow (or JAX), Keras, MLflow and Hydra before any
# work: most of a million objects that live as long as the process, which every full garbage
# collection would walk again, during the imports, during the run and once more at exit. So a stage
# run collects nothing while it imports, and cli.stage.main freezes what was imported (gc.freeze)
# and turns collection back on for what the run allocates. Python sets sys.argv[0] to "-m" while it
# imports the package of the module that -m runs; any other import of petvision leaves gc alone.
if getattr(sys, "argv", [])[:1] == ["-m"]:
    gc.disable()
