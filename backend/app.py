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
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge

from backend.config import WEBHOOK_SECRET_HEADER, Settings
from backend.engine import FAILED, EngineNotReady
from converters.labelstudio.schema import LabelConfigError
from backend.model import PSLGModel, failure_summary, predict_envelopes
from backend.runtime import Runtime, SetupRefused

log = logging.getLogger("pslg.backend.app")


def basic_auth_ok(header: str, user: str, password: str) -> bool:
    """Whether an ``Authorization: Basic`` header carries ``user``/``password``, compared as UTF-8 bytes in
    constant time (``hmac.compare_digest`` refuses non-ASCII ``str``, which made a non-ASCII password a 500)."""
    if not header.startswith("Basic "):
        return False
    try:
        raw = base64.b64decode(header[6:].strip(), validate=True)
    except ValueError:
        return False
    given_user, _, given_password = raw.partition(b":")
    user_ok = hmac.compare_digest(given_user, user.encode("utf-8"))
    password_ok = hmac.compare_digest(given_password, password.encode("utf-8"))
    return user_ok and password_ok


def _check_basic_auth(settings: Settings) -> Optional[Response]:
    if basic_auth_ok(request.headers.get("Authorization", ""), settings.basic_auth_user or "", settings.basic_auth_pass or ""):
        return None
    return Response('{"error": "authentication required"}', 401, {"WWW-Authenticate": 'Basic realm="pslg"',
                                                                   "Content-Type": "application/json"})


def webhook_secret_ok(settings: Settings) -> bool:
    """Whether the request carries PSLG_WEBHOOK_SECRET, in the ``X-PSLG-Webhook-Secret`` header or the ``secret``
    query parameter, compared as UTF-8 bytes in constant time."""
    expected = (settings.webhook_secret or "").encode("utf-8")
    header = request.headers.get(WEBHOOK_SECRET_HEADER)  # WSGI hands header bytes over as latin-1 text
    query = request.args.get("secret")  # percent-decoded as UTF-8
    candidates = [header.encode("latin-1", "replace") if header is not None else None,
                  query.encode("utf-8", "replace") if query is not None else None]
    return bool(expected) and any(c is not None and hmac.compare_digest(c, expected) for c in candidates)


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify({"error": message}), status


#: bodies above this size have their tasks counted by a streaming parser before they are parsed whole
_COUNT_TASKS_ABOVE = 1024 * 1024


def more_tasks_than(body: bytes, limit: int) -> bool:
    """Whether the ``tasks`` list of a ``/predict`` body has more than ``limit`` items, read with ijson's
    streaming parser and stopped at item ``limit + 1`` (malformed JSON: False, the full parse reports it)."""
    import io

    import ijson

    count = 0
    try:
        for prefix, event, _ in ijson.parse(io.BytesIO(body)):
            if prefix == "tasks.item" and event in ("start_map", "start_array", "string", "number", "null", "boolean"):
                count += 1
                if count > limit:
                    return True
    except Exception:  # ijson's errors for malformed or too deeply nested JSON
        return False
    return False


class TooDeep(BadRequest):
    """A JSON body nested deeper than the parser's recursion limit (about 1000 levels)."""

    description = "the request body is JSON nested too deeply to parse"


def json_body() -> Any:
    """The request's JSON (None when it is not JSON); ``TooDeep`` (400) when it nests beyond the parser's limit
    (``json`` raises RecursionError, which Flask's ``silent`` does not catch: it was a 500)."""
    try:
        return request.get_json(silent=True)
    except RecursionError:
        raise TooDeep() from None


def task_problem(task: Any) -> Optional[str]:
    """Why a task of a ``/predict`` body cannot be predicted at all (its shape), or None."""
    if not isinstance(task, dict):
        return f"a task must be a JSON object, not {type(task).__name__}"
    data = task.get("data")
    if data is not None and not isinstance(data, dict):
        return f"task 'data' must be a JSON object, not {type(data).__name__}"
    return None


def failed_prediction(model_version: str, message: str) -> dict:
    """The envelope of a task that could not be predicted: empty, with the reason (Label Studio 1.23 stores only
    ``result``/``score``/``model_version`` and ignores ``error``, so the reason reaches the caller harmlessly)."""
    return {"result": [], "score": 0.0, "model_version": model_version, "error": message}


def _project_key(project: Any) -> str:
    """Label Studio sends ``"<project id>.<created timestamp>"``; the id part names the project."""
    if project is None or isinstance(project, (dict, list, bool)):
        return ""
    return str(project).split(".")[0]


def create_app(settings: Optional[Settings] = None, runtime: Optional[Runtime] = None) -> Flask:
    """The WSGI app; models start loading in the background right away (``/health`` shows the state)."""
    from converters.labelstudio.fetch import LRUCache

    settings = settings or (runtime.settings if runtime is not None else Settings.from_env())
    runtime = runtime or Runtime(settings)
    app = Flask("pslg-backend")
    app.config["PSLG_RUNTIME"] = runtime
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    # bounded: distinct projects and labeling configs come from requests, each model holds a parsed config
    models = LRUCache(size=settings.max_projects, sizeof=lambda _: 0)
    project_configs = LRUCache(size=settings.max_projects, sizeof=lambda _: 0)
    app.extensions["pslg_models"] = models
    app.extensions["pslg_project_configs"] = project_configs

    def check_config(config: Any) -> str:
        if not isinstance(config, str):
            raise LabelConfigError(f"the labeling config must be an XML string, not {type(config).__name__}")
        if len(config.encode("utf-8")) > settings.max_label_config_bytes:
            raise LabelConfigError(f"the labeling config is over {settings.max_label_config_bytes} bytes (PSLG_MAX_LABEL_CONFIG_BYTES)")
        return config

    def model_for(project: Any, label_config: Any) -> PSLGModel:
        project_id = _project_key(project)
        config = label_config if label_config is not None else project_configs.get(project_id)
        if not config:
            raise LabelConfigError("no labeling config: send label_config with /predict or call /setup first")
        config = check_config(config)
        key = (project_id, config)
        model = models.get(key)
        if model is None:
            model = PSLGModel(runtime, project_id=project_id, label_config=config)
            models.put(key, model)
        return model

    for warning in settings.startup_warnings():
        log.warning(warning)
    refused_webhooks = [0]

    @app.before_request
    def _auth() -> Optional[Response]:
        if request.path == "/webhook" and settings.webhook_secret:
            # Label Studio's webhooks carry custom headers but not the ML backend's Basic auth: the secret suffices
            if webhook_secret_ok(settings) or (settings.basic_auth_enabled and basic_auth_ok(
                    request.headers.get("Authorization", ""), settings.basic_auth_user or "", settings.basic_auth_pass or "")):
                return None
            refused = _check_basic_auth(settings) if settings.basic_auth_enabled else Response(
                '{"error": "webhook secret required (PSLG_WEBHOOK_SECRET)"}', 401, {"Content-Type": "application/json"})
        elif settings.basic_auth_enabled:
            refused = _check_basic_auth(settings)
            if refused is None:
                return None
        else:
            return None
        if request.path == "/webhook":
            refused_webhooks[0] += 1
            if refused_webhooks[0] == 1:
                log.warning("a /webhook was refused (401): corrections are not stored; %s",
                            "check the secret the project's webhook sends" if settings.webhook_secret else
                            "set PSLG_WEBHOOK_SECRET and send it from the project's webhook (docs/serve-backend.md)")
        return refused

    @app.teardown_request
    def _release_images(exc: Optional[BaseException]) -> None:
        runtime.decode_budget.release_held()  # the images this request decoded or took from the cache

    @app.before_request
    def _cap_unsized_bodies() -> None:
        """A chunked body (no Content-Length) is cut at MAX_CONTENT_LENGTH by Werkzeug without an error; answer 413
        instead of parsing a truncated body."""
        if request.content_length is None and request.environ.get("wsgi.input_terminated"):
            request.get_data(cache=True)  # reads at most MAX_CONTENT_LENGTH bytes
            if request.environ["wsgi.input"].read(1):
                raise RequestEntityTooLarge()

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
        if runtime.trainer.outcome:
            body["training_outcome"] = runtime.trainer.outcome
        if refused_webhooks[0]:  # learning is off while Label Studio's webhooks are refused: say so
            body["webhooks_refused"] = refused_webhooks[0]
        body.update(engine.health())  # the served grounding model, and "fallback" when an older one is served
        return jsonify(body)

    @app.route("/setup", methods=["POST"])
    def setup():
        data = json_body()
        if not isinstance(data, dict):
            return _error(400, "the /setup body must be a JSON object")
        project = _project_key(data.get("project"))
        schema = data.get("schema") or data.get("label_config")
        if schema:
            try:
                model_for(project, schema)
            except LabelConfigError as exc:
                return _error(400, str(exc))
        try:
            runtime.remember_setup(project, data.get("hostname"), data.get("access_token"),
                                   authenticated=settings.basic_auth_enabled)
        except SetupRefused as exc:
            log.warning("/setup refused: %s", exc)
            return _error(403, str(exc))
        if schema:  # only once the setup is accepted: a refused /setup changes nothing
            project_configs.put(project, schema)
            runtime.remember_label_config(project or None, schema)
        runtime.engine.request_refresh()  # a newer version in the model store is picked up in the background
        return jsonify({"model_version": runtime.engine.model_version})

    @app.route("/predict", methods=["POST"])
    def predict():
        if (request.content_length or 0) > _COUNT_TASKS_ABOVE and more_tasks_than(
                request.get_data(cache=True), settings.max_tasks_per_request):
            # counted while streaming, before any task becomes a Python object (3.5 M tiny tasks parsed cost GBs)
            return _error(413, f"more than {settings.max_tasks_per_request} tasks in one request "
                               "(PSLG_MAX_TASKS_PER_REQUEST); send them in smaller batches")
        data = json_body()
        if not isinstance(data, dict):
            return _error(400, "the request body must be a JSON object with 'tasks'")
        tasks = data.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            return _error(400, "'tasks' must be a non-empty list of Label Studio tasks")
        if len(tasks) > settings.max_tasks_per_request:
            return _error(413, f"{len(tasks)} tasks in one request, above the limit of {settings.max_tasks_per_request} "
                               "(PSLG_MAX_TASKS_PER_REQUEST); send them in smaller batches")
        params = data.get("params")
        if params is not None and not isinstance(params, dict):
            return _error(400, f"'params' must be a JSON object, not {type(params).__name__}")
        context = (params or {}).get("context")
        if context is not None and not isinstance(context, dict):
            return _error(400, f"'params.context' must be a JSON object, not {type(context).__name__}")
        try:
            model = model_for(data.get("project"), data.get("label_config"))
        except LabelConfigError as exc:
            return _error(400, str(exc))
        if not runtime.engine.wait_ready(timeout=settings.predict_wait_s):
            state = "failed to load: " + str(runtime.engine.error) if runtime.engine.state == FAILED else "still loading"
            return _error(503, f"the models are {state}")
        t0 = time.perf_counter()
        version = runtime.engine.model_version
        results: list[Optional[dict]] = [None] * len(tasks)
        valid: list[int] = []
        malformed: dict[str, list[Any]] = {}
        for i, task in enumerate(tasks):
            problem = task_problem(task)
            if problem is None:
                valid.append(i)
                continue
            malformed.setdefault(problem, []).append(f"#{i}")
            results[i] = failed_prediction(version, problem)
        if malformed:  # one line for the request, however many tasks are malformed
            log.warning("%s", failure_summary(malformed, len(tasks)))
        if valid:
            try:
                predicted = predict_envelopes(model, [tasks[i] for i in valid], context)
            except EngineNotReady as exc:
                return _error(503, str(exc))
            for i, envelope in zip(valid, predicted):
                results[i] = envelope
        log.info("predicted %d task(s)%s in %.0f ms", len(tasks), " (interactive)" if context else "",
                 1000 * (time.perf_counter() - t0))
        return jsonify({"results": results, "model_version": runtime.engine.model_version})

    @app.route("/webhook", methods=["POST"])
    def webhook():
        data = json_body()
        if not isinstance(data, dict) or "action" not in data:
            return _error(400, "a webhook payload must be a JSON object with 'action'")
        try:
            answer = runtime.handle_event(str(data["action"]), data, host=request.host)
        except (ValueError, KeyError, TypeError) as exc:
            return _error(400, f"bad webhook payload: {exc}")
        return jsonify(answer), 201

    @app.route("/train", methods=["POST"])
    def train():
        """Label Studio's older training call (without the START_TRAINING webhook flag): tasks with annotations."""
        data = json_body()
        if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
            return _error(400, "a /train body must be a JSON object with 'annotations' (tasks with their annotations)")
        project = _project_key(data.get("project")) or None
        stored = 0
        errors: list[str] = []
        for task in data["annotations"]:
            if not isinstance(task, dict) or not isinstance(task.get("annotations") or [], list):
                errors.append(f"a /train item must be a task object with an 'annotations' list, not {type(task).__name__}")
                continue
            for annotation in task.get("annotations") or []:
                try:
                    status = runtime.train_item(project, {k: v for k, v in task.items() if k != "annotations"}, annotation)
                except ValueError as exc:
                    errors.append(str(exc))
                    continue
                stored += status == "stored"
        # Label Studio keeps the answer's "job" (here: the one-line outcome) as its training job
        answer: dict[str, Any] = {"status": "training", "stored": stored,
                                  **runtime.trainer.request_and_wait("/train", runtime.settings.train_wait_s)}
        if errors:
            answer["errors"] = errors
        runtime.show_outcome(project, request.host, answer)
        return jsonify(answer), 201

    @app.route("/validate", methods=["POST"])
    def validate():
        data = json_body()
        if not isinstance(data, dict):
            return _error(400, "the /validate body must be a JSON object with 'config'")
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

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc):
        return _error(413, f"the request body is over {settings.max_request_bytes} bytes (PSLG_MAX_REQUEST_BYTES)")

    @app.errorhandler(TooDeep)
    def too_deep(exc):
        return _error(400, TooDeep.description)

    @app.errorhandler(500)
    def internal(exc):  # never leak a traceback (or a token) to the caller
        log.exception("internal error: %s", exc)
        return jsonify({"error": "internal error; see the backend log"}), 500

    return app
