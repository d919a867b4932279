"""The OpenAPI 3.1 document served at `GET /v1/openapi.json` (public-api.md 3).

The framework writes the paths, parameters and success shapes from the routes and their
`response_model`. Bodies are parsed by our own code (wire.py), so their models come from the
markers the handlers carry; errors never use the framework's 422, so each operation gets
the error envelope for the statuses it really answers.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel

from keysat import __version__
from keysat.access.routes import declared_gate
from keysat.errors import ERROR_CODES, ErrorBody, TierCapBody
from keysat.wire import (
    BODY_ALTERNATIVES_ATTR,
    BODY_MEDIA_ATTR,
    BODY_MODEL_ATTR,
    BODY_OPTIONAL_ATTR,
    ERRORS_ATTR,
)

SCHEMA_REF = "#/components/schemas/{model}"
SESSION_COOKIE = "keysat_session"

ERROR_DESCRIPTIONS = {
    400: "A refused body, query or path parameter.",
    401: "No credential, or one that is unknown, revoked or expired.",
    402: "The server's own tier does not allow this (access.md 9.3).",
    403: "The credential does not hold the gate named in `x-keysat-gate`.",
    404: "The id or name in the path (or a referenced one) does not exist.",
    409: "The request conflicts with the current state.",
    429: "Too many attempts; `Retry-After` says when to try again.",
    502: "The payment provider or the rate source failed.",
    503: "The service this call needs is not configured or not available.",
}


def api_routes(app: FastAPI) -> list[APIRoute]:
    """Every API route of the app, through the routers it includes."""
    return [
        context.original_route
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, APIRoute)
    ]


def _marker(route: APIRoute, attribute: str) -> Any:
    """A marker on the handler, or on one of its dependencies (the `json_body` parser)."""
    if hasattr(route.endpoint, attribute):
        return getattr(route.endpoint, attribute)
    pending = list(route.dependant.dependencies)
    while pending:
        dependant = pending.pop()
        if hasattr(dependant.call, attribute):
            return getattr(dependant.call, attribute)
        pending.extend(dependant.dependencies)
    return None


def _schema_of(shape: type[BaseModel] | dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    if isinstance(shape, dict):
        return shape
    schema = shape.model_json_schema(ref_template=SCHEMA_REF)
    schemas.update(schema.pop("$defs", {}))
    schemas[shape.__name__] = schema
    return {"$ref": SCHEMA_REF.format(model=shape.__name__)}


def _request_body(route: APIRoute, schemas: dict[str, Any]) -> dict[str, Any] | None:
    shape = _marker(route, BODY_MODEL_ATTR)
    if shape is None:
        return None
    media_type = _marker(route, BODY_MEDIA_ATTR) or "application/json"
    content = {media_type: {"schema": _schema_of(shape, schemas)}}
    for other, schema in (_marker(route, BODY_ALTERNATIVES_ATTR) or {}).items():
        content[other] = {"schema": schema}
    return {"required": not _marker(route, BODY_OPTIONAL_ATTR), "content": content}


def _error_schema(status: int, schemas: dict[str, Any]) -> dict[str, Any]:
    """The envelope with the `error` codes of one status, as its own named schema."""
    if status == 402:
        return _schema_of(TierCapBody, schemas)
    name = f"Error{status}"
    if name not in schemas:
        schema = ErrorBody.model_json_schema(ref_template=SCHEMA_REF)
        schema["title"] = name
        schema["properties"]["error"] = {"type": "string", "enum": list(ERROR_CODES[status])}
        schemas[name] = schema
    return {"$ref": SCHEMA_REF.format(model=name)}


def _error_response(
    status: int, extra: type[BaseModel] | None, schemas: dict[str, Any]
) -> dict[str, Any]:
    schema = _error_schema(status, schemas)
    if extra is not None:
        schema = {"anyOf": [schema, _schema_of(extra, schemas)]}
    return {
        "description": ERROR_DESCRIPTIONS[status],
        "content": {"application/json": {"schema": schema}},
    }


def _listed_errors(route: APIRoute) -> tuple[tuple[int, ...], dict[int, type[BaseModel]]]:
    """What `documents_errors` named: statuses, and second body shapes by status."""
    marked = _marker(route, ERRORS_ATTR)
    if marked is None:
        return (), {}
    statuses, shapes = marked
    return tuple(statuses), dict(shapes)


def _error_statuses(route: APIRoute, operation: dict[str, Any]) -> set[int]:
    statuses: set[int] = set()
    if declared_gate(route) is not None:
        statuses |= {401, 403}
    places = {parameter["in"] for parameter in operation.get("parameters", ())}
    if "requestBody" in operation or "query" in places:
        statuses.add(400)
    if "path" in places:
        statuses.add(404)
    return statuses


def build_openapi(app: FastAPI) -> dict[str, Any]:
    document = get_openapi(
        title="Keysat", version=__version__, openapi_version="3.1.0", routes=app.routes
    )
    components = document.setdefault("components", {})
    schemas: dict[str, Any] = components.setdefault("schemas", {})
    # Our errors are the envelope, never the framework's 422 validation list.
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    components["securitySchemes"] = {
        "bearerAuth": {"type": "http", "scheme": "bearer"},
        "sessionCookie": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE},
    }
    for route in api_routes(app):
        if not route.include_in_schema:
            continue
        body = _request_body(route, schemas)
        listed, shapes = _listed_errors(route)
        gate = declared_gate(route)
        for method in route.methods or ():
            operation = document["paths"][route.path_format][method.lower()]
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            operation["security"] = (
                [{"bearerAuth": []}, {"sessionCookie": []}] if gate is not None else []
            )
            if gate is not None:
                # What a scoped key needs here: a scope, `master` or `provider-connect`.
                operation["x-keysat-gate"] = gate
            if body is not None:
                operation["requestBody"] = body
            for status in sorted(_error_statuses(route, operation) | set(listed)):
                responses.setdefault(
                    str(status), _error_response(status, shapes.get(status), schemas)
                )
    return document
