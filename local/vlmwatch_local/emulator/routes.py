"""The emulator's HTTP side: a small router over plain route functions.

Every route is a function ``(emu, request, **path_params) -> Response``; :data:`ROUTES` says which method
and path reach it, and :func:`build_app` mounts them on a Flask app behind one gate, where every request
is counted and the faults (:mod:`.faults`) may answer an API request instead of its route.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flask import Flask, Request, Response, request
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from vlmwatch_local.emulator.faults import Refusal, error_body
from vlmwatch_local.emulator.schema import ExecuteRequest
from vlmwatch_local.emulator.state import file_record

if TYPE_CHECKING:
    from vlmwatch_local.emulator.service import Emulator

Route = Callable[..., Response]


def ok(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data), status=status, mimetype="application/json")


def detail(status: int, message: str) -> Response:
    """FastAPI's error shape, which the real API also uses."""
    return ok({"detail": message}, status=status)


def error(status: int, message: str, kind: str) -> Response:
    return ok(error_body(message, kind), status=status)


def refused(refusal: Refusal) -> Response:
    return Response(
        json.dumps(refusal.body), status=refusal.status, mimetype="application/json", headers=refusal.headers
    )


# -- the API ----------------------------------------------------------------------------------------


def health(emu: Emulator, req: Request) -> Response:
    return ok({"status": "ok"})


def execute(emu: Emulator, req: Request) -> Response:
    body = req.get_json(silent=True)
    if not isinstance(body, dict):
        return detail(422, "body must be a JSON object")
    try:
        ExecuteRequest.model_validate(body)
    except ValidationError as exc:
        # FastAPI's 422: a list of {loc, msg, type}, as the real API answers a malformed body.
        errors = [{"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return ok({"detail": errors}, status=422)
    if not body.get("batch", False):
        return error(400, "only batch executions are supported", "invalid_request_error")
    if not body.get("name") and not (body.get("config") or {}).get("prompt"):
        return error(400, "either 'name' or 'config.prompt' is required", "invalid_request_error")
    if body.get("name") and str(body["name"]).startswith("missing"):
        return error(404, f"agent {body['name']!r} not found", "not_found_error")
    if not emu.spend_credit():
        return refused(emu.faults.out_of_credits())  # nothing created
    execution = emu.create_execution(body, dict(req.headers))
    if emu.faults.hangs(emu.config):
        emu.requests["hang"] += 1
        execution.answered = False
        time.sleep(emu.config.hang_seconds)  # created, but the caller has given up waiting
    return ok(emu.render(execution))


def get_execution(emu: Emulator, req: Request, exec_id: str) -> Response:
    execution = emu.executions.get(exec_id)
    if execution is None:
        return detail(404, f"Execution {exec_id} not found")
    emu.advance(execution, by_poll=True)
    return ok(emu.render(execution))


def list_executions(emu: Emulator, req: Request) -> Response:
    skip = int(req.args.get("skip", 0))
    limit = int(req.args.get("limit", 10))
    items = sorted(emu.executions.values(), key=lambda e: e.created_at, reverse=True)[skip : skip + limit]
    for item in items:  # a look at an execution, like a GET (the poll-stepped mode moves on it)
        emu.advance(item, by_poll=True)
    return ok([emu.render(e) for e in items])


def get_artifact(emu: Emulator, req: Request) -> Response:
    key = (req.args.get("execution_id", ""), req.args.get("object_id", ""))
    if key not in emu.artifacts:
        return detail(404, "Artifact not found")
    data, ctype = emu.artifacts[key]
    return Response(data, mimetype=ctype)


def list_artifacts(emu: Emulator, req: Request) -> Response:
    exec_id = req.args.get("execution_id", "")
    items = [{"object_id": oid, "filename": None, "source": "store"} for (eid, oid) in emu.artifacts if eid == exec_id]
    return ok({"namespace_id": exec_id, "items": items})


def upload_file(emu: Emulator, req: Request) -> Response:
    upload = req.files.get("file")
    if upload is None:
        return detail(422, "multipart field 'file' is required")
    data = upload.read()
    file_id = str(uuid.uuid4())
    emu.uploads[file_id] = data
    emu.files[file_id] = file_record(
        file_id, upload.filename or "file", len(data), upload.mimetype, emu.config.public_url
    )
    return ok(emu.files[file_id], status=201)


def presigned_url(emu: Emulator, req: Request) -> Response:
    body = req.get_json(silent=True) or {}
    file_id = str(uuid.uuid4())
    filename = body.get("filename") or "file"
    emu.files[file_id] = file_record(file_id, filename, 0, "application/octet-stream", emu.config.public_url)
    base = emu.config.public_url.rsplit("/v1", 1)[0]
    return ok(
        {
            "id": file_id,
            "url": f"{base}/_uploads/{file_id}",
            "filename": filename,
            "content_type": "application/octet-stream",
            "upload_method": "PUT",
            "public_url": emu.files[file_id]["public_url"],
            "created_at": datetime.now(UTC).isoformat(),
            "expiration": 3600,
            "method": "PUT",
        }
    )


def verify_upload(emu: Emulator, req: Request, file_id: str) -> Response:
    if file_id not in emu.uploads:
        return detail(404, "upload not found")
    emu.files[file_id]["bytes"] = len(emu.uploads[file_id])
    return ok(emu.files[file_id])


def file_by_hash(emu: Emulator, req: Request, digest: str) -> Response:
    for file_id, data in emu.uploads.items():
        if hashlib.md5(data).hexdigest() == digest:  # noqa: S324 - the SDK's cache key, not security
            return ok(emu.files[file_id])
    return detail(404, "not found")


def get_file(emu: Emulator, req: Request, file_id: str) -> Response:
    if file_id not in emu.files:
        return detail(404, "File not found")
    return ok(emu.files[file_id])


# -- not the API: the presigned upload's target, and the emulator's own controls ---------------------


def put_upload(emu: Emulator, req: Request, file_id: str) -> Response:
    if file_id not in emu.files:
        return Response("no such upload", status=404)
    if req.headers.get("Authorization"):
        # A presigned URL carries its own authorisation; a bearer token here is a client bug.
        return Response("unexpected Authorization header on a presigned upload", status=400)
    emu.uploads[file_id] = req.get_data()
    return Response("", status=200)


def stats(emu: Emulator, req: Request) -> Response:
    return ok(emu.stats())


def configure(emu: Emulator, req: Request) -> Response:
    try:
        emu.configure(req.get_json(force=True) or {})
    except ValueError as exc:
        return detail(400, str(exc))
    return ok({"ok": True})


ROUTES: list[tuple[str, str, Route]] = [
    ("GET", "/v1/health", health),
    ("POST", "/v1/agent/execute", execute),
    ("GET", "/v1/agent/executions/<exec_id>", get_execution),
    ("GET", "/v1/agent/executions", list_executions),
    ("GET", "/v1/artifacts", get_artifact),
    ("GET", "/v1/artifacts/list", list_artifacts),
    ("POST", "/v1/files", upload_file),
    ("POST", "/v1/files/presigned-url", presigned_url),
    ("GET", "/v1/files/verify-upload/<file_id>", verify_upload),
    ("GET", "/v1/files/hash/<digest>", file_by_hash),
    ("GET", "/v1/files/<file_id>", get_file),
    ("PUT", "/_uploads/<file_id>", put_upload),
    ("GET", "/_emulator/stats", stats),
    ("POST", "/_emulator/config", configure),
]


def gate(emu: Emulator, req: Request) -> Response | None:
    """Before every route: count the request; for the API, wait out the latency and let a fault answer."""
    route = req.url_rule.rule if req.url_rule else req.path
    emu.requests[f"{req.method} {route}"] += 1
    if not emu.faults.is_api(req.path):
        return None
    delay = emu.faults.latency(emu.config, req.headers)
    if delay:
        time.sleep(delay)
    refusal = emu.faults.refusal(emu.config, req.headers.get("Authorization"), emu.now(), f"{req.method} {route}")
    if refusal is None:
        return None
    if refusal.tally:
        emu.requests[refusal.tally] += 1
    return refused(refusal)


def build_app(emu: Emulator) -> Flask:
    """The Flask app: :data:`ROUTES` bound to ``emu``, behind :func:`gate`."""
    app = Flask("vlmrun-emulator")

    def bind(view: Route) -> Route:
        def handle(**params: str) -> Response:
            return view(emu, request, **params)

        return handle

    for method, rule, view in ROUTES:
        app.add_url_rule(rule, endpoint=view.__name__, view_func=bind(view), methods=[method])
    app.before_request(lambda: gate(emu, request))
    app.register_error_handler(HTTPException, lambda exc: detail(exc.code or 500, str(exc.description)))
    return app
