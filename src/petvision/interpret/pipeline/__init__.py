"""The visualize stage's work: :mod:`.draw` checks its inputs and runs every part into one folder;
:mod:`.sections` the book's views (activations, filters, Grad-CAM, segmentation samples);
:mod:`.evidence` where the classifier looks and whether the maps are faithful and sane, and where
the segmentation model fails; :mod:`.links` the MLflow run's artifacts and its links to the
training runs. What goes in each picture, and the measures of its captions, are chosen here;
:mod:`petvision.render.figures` draws it."""
