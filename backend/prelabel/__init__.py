"""Bulk pre-labelling of a whole Label Studio project or tasks file, outside the request path (``pslg prelabel``).

The task → prediction path is the backend's own (``backend.model.PSLGModel._predict_batch``) so a project
pre-labelled here looks exactly as if Label Studio's "Retrieve Predictions" had asked the backend, and carries
the same ``model_version``: the backend skips what is already predicted, and a later run after a retrain
re-predicts only the stale tasks.

Modules: ``worker`` (one loaded pipeline answering chunks of tasks), ``executors`` (in-process, local
processes, Ray), ``checkpoint`` (append-only record of finished tasks), ``sources`` (tasks JSON or a live
project), ``job`` (the loop tying them together).
"""
