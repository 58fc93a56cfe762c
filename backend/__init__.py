"""Label Studio ML backend for PSLG-SAM: batch pre-labels, interactive refinement, learning from corrections.

Modules: ``config`` (environment), ``images`` (fetching task images with Label Studio tokens), ``labels``
(reading the labeling config), ``engine`` (the per-process models, loaded in the background), ``model``
(the ``LabelStudioMLBase``-style class with ``predict`` / ``fit``), ``store`` (SQLite training store),
``training`` (background retraining), ``app`` (the Flask routes), ``_wsgi`` (gunicorn entry point).
"""
