"""Everything the project draws or writes for people to look at; numbers in, files out.

:mod:`.plots` the training stages' matplotlib figures; :mod:`.images` pixels from arrays (the
book's displays of activations, filter patterns and heatmaps, mask and error overlays);
:mod:`.pictures` saving them and panel grids; :mod:`.figures` the visualize stage's charts and
grids of images; :mod:`.report_tables` and :mod:`.html_report` the pipeline's one-page report.
Importing the package imports none of them: the training stages load :mod:`.plots` alone.
"""
