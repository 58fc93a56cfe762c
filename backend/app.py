"""The Flask app speaking Label Studio's ML-backend protocol (formats.md): /health, /setup, /predict, /webhook, /versions.

Why our own small app rather than ``label-studio-ml``: the PyPI release (1.0.9) pins Flask 1.1 and cannot use
personal access tokens, and the maintained one is not published. The routes and answers follow the maintained
``label_studio_ml.api`` so Label Studio cannot tell the difference. Served by gunicorn (``pslg serve``).
"""

from __future__ import annotations

import base64
import hmac
import logging
import time
from typing import Any, Optional

from flask import Flask, Response, jsonify, request

from backend.config import Settings
from backend.engine import FAILED, EngineNotReady
from backend.labels import LabelConfigError
from backend.model import PSLGModel, predict_envelopes
from backend.runtime import Runtime

log = logging.getLogger("pslg.backend.app")


def _check_basic_auth(settings: Settings) -> Optional[Response]:
    header = request.headers.get("Authorization", "")
    if header.startswith("Basic "):
        try:
            user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            user, password = "", ""
        if hmac.compare_digest(user, settings.basic_auth_user or "") and hmac.compare_digest(password, settings.basic_auth_pass or ""):
            return None
    return Response('{"error": "authentication required"}', 401, {"WWW-Authenticate": 'Basic realm="pslg"',
                                                                   "Content-Type": "application/json"})


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify({"error": message}), status


def create_app(settings: Optional[Settings] = None, runtime: Optional[Runtime] = None) -> Flask:
    """The WSGI app; models start loading in the background right away (``/health`` shows the state)."""
    settings = settings or (runtime.settings if runtime is not None else Settings.from_env())
    runtime = runtime or Runtime(settings)
    app = Flask("pslg-backend")
    app.config["PSLG_RUNTIME"] = runtime
    models: dict[tuple[str, str], PSLGModel] = {}
    project_configs: dict[str, str] = {}

    def model_for(project: Optional[str], label_config: Optional[str]) -> PSLGModel:
        project_id = str(project).split(".")[0] if project is not None else ""
        config = label_config or project_configs.get(project_id)
        if not config:
            raise LabelConfigError("no labeling config: send label_config with /predict or call /setup first")
        key = (project_id, config)
        if key not in models:
            models[key] = PSLGModel(runtime, project_id=project_id, label_config=config)
        return models[key]

    if settings.basic_auth_enabled:
        @app.before_request
        def _auth() -> Optional[Response]:
            return _check_basic_auth(settings)

    @app.route("/", methods=["GET"])
    @app.route("/health", methods=["GET"])
    def health():
        engine = runtime.engine
        body: dict[str, Any] = {
            "status": "UP", "model_class": "PSLGModel", "model_version": engine.model_version, "models": engine.state,
            "ready": engine.ready, "training": runtime.trainer.status.state, "stored_annotations": runtime.store.count(),
        }
        if engine.state == FAILED:
            body["error"] = engine.error
        if runtime.trainer.status.last_error:
            body["training_error"] = runtime.trainer.status.last_error
        return jsonify(body)

    @app.route("/setup", methods=["POST"])
    def setup():
        data = request.get_json(silent=True) or {}
        project = str(data.get("project") or "").split(".")[0]
        schema = data.get("schema") or data.get("label_config")
        if schema:
            try:
                model_for(project, schema)
            except LabelConfigError as exc:
                return _error(400, str(exc))
            project_configs[project] = schema
        runtime.remember_setup(project, data.get("hostname"), data.get("access_token"))
        return jsonify({"model_version": runtime.engine.model_version})

    @app.route("/predict", methods=["POST"])
    def predict():
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            return _error(400, "the request body must be a JSON object with 'tasks'")
        tasks = data.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            return _error(400, "'tasks' must be a non-empty list of Label Studio tasks")
        params = data.get("params") or {}
        context = params.get("context") if isinstance(params, dict) else None
        try:
            model = model_for(data.get("project"), data.get("label_config"))
        except LabelConfigError as exc:
            return _error(400, str(exc))
        if not runtime.engine.wait_ready(timeout=settings.predict_wait_s):
            state = "failed to load: " + str(runtime.engine.error) if runtime.engine.state == FAILED else "still loading"
            return _error(503, f"the models are {state}")
        t0 = time.perf_counter()
        try:
            results = predict_envelopes(model, tasks, context)
        except EngineNotReady as exc:
            return _error(503, str(exc))
        log.info("predicted %d task(s)%s in %.0f ms", len(tasks), " (interactive)" if context else "",
                 1000 * (time.perf_counter() - t0))
        return jsonify({"results": results, "model_version": runtime.engine.model_version})

    @app.route("/webhook", methods=["POST"])
    def webhook():
        data = request.get_json(silent=True)
        if not isinstance(data, dict) or "action" not in data:
            return _error(400, "a webhook payload must be a JSON object with 'action'")
        try:
            answer = runtime.handle_event(str(data["action"]), data)
        except (ValueError, KeyError, TypeError) as exc:
            return _error(400, f"bad webhook payload: {exc}")
        return jsonify(answer), 201

    @app.route("/train", methods=["POST"])
    def train():
        """Label Studio's older training call (without the START_TRAINING webhook flag): tasks with annotations."""
        data = request.get_json(silent=True)
        if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
            return _error(400, "a /train body must be a JSON object with 'annotations' (tasks with their annotations)")
        project = str(data.get("project") or "").split(".")[0] or None
        stored = 0
        for task in data["annotations"]:
            for annotation in (task or {}).get("annotations") or []:
                if isinstance(annotation, dict) and "id" in annotation:
                    runtime.store.upsert("TRAIN", project, {k: v for k, v in task.items() if k != "annotations"}, annotation)
                    stored += 1
        return jsonify({"status": "training", "stored": stored, "training": runtime.trainer.request("/train")}), 201

    @app.route("/validate", methods=["POST"])
    def validate():
        data = request.get_json(silent=True) or {}
        try:
            model_for(None, data.get("config") or data.get("label_config"))
        except LabelConfigError as exc:
            return _error(422, str(exc))
        return jsonify({"status": "ok"})

    @app.route("/versions", methods=["GET", "POST"])
    def versions():
        engine = runtime.engine
        known = list(engine.versions) or [engine.model_version]
        return jsonify({"versions": known, "model_version": engine.model_version})

    @app.errorhandler(500)
    def internal(exc):  # never leak a traceback (or a token) to the caller
        log.exception("internal error: %s", exc)
        return jsonify({"error": "internal error; see the backend log"}), 500

    return app
