"""Check recorded BTCPay Greenfield exchanges against BTCPay's own OpenAPI 3.0 document.

The document (`vendor/btcpay-greenfield-openapi.json`) is OpenAPI 3.0, not JSON Schema, so
its schemas are converted before validation:

* `nullable: true` becomes "null, or the schema" (OpenAPI 3.0 has no null type);
* boolean `exclusiveMinimum`/`exclusiveMaximum` (draft 4 style) become numeric bounds;
* `allOf` lists of object schemas are merged into one object schema. BTCPay models
  inheritance this way and puts `additionalProperties: false` on a base, which a literal
  JSON Schema reading would turn into "no property of the derived class is allowed".
  Merged, the closed set of properties is the union of all members, as BTCPay means it.

Where the document is silent or differs from what BTCPay serves: an error status it does not
describe is checked against BTCPay's generic error shapes (ProblemDetails, or
ValidationProblemDetails for 422); the store-scoped invoice read and webhook delete are
checked as their store-less twins; and the API-key revoke may answer with no body.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from fakes.base import RecordedRequest

DOCUMENT_PATH = Path(__file__).parent / "vendor" / "btcpay-greenfield-openapi.json"
CONTROL_PREFIX = "/_fake"
API_PREFIX = "/api/"

# BTCPay serves these store-scoped forms (Keysat uses them, section 4.2 of payments.md), but
# the current document lists only the store-less equivalents.
PATH_ALIASES = {
    "/api/v1/stores/{storeId}/invoices/{invoiceId}": "/api/v1/invoices/{invoiceId}",
    "/api/v1/stores/{storeId}/webhooks/{webhookId}": "/api/v1/webhooks/{webhookId}",
}

# BTCPay's controller answers `Ok()` with no body here although the document declares one.
EMPTY_SUCCESS_BODY_ALLOWED = {("DELETE", "/api/v1/api-keys/current")}

# Keywords under which an object schema may be merged with its allOf siblings; anything else
# (oneOf, items, a $ref...) keeps the allOf as it is.
MERGEABLE_KEYS = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "description",
    "title",
    "example",
    "default",
    "nullable",
}

Schema = dict[str, Any]


@functools.cache
def _document() -> dict[str, Any]:
    with DOCUMENT_PATH.open(encoding="utf-8") as f:
        document: dict[str, Any] = json.load(f)
    return document


def _resolve(schema: Schema) -> Schema:
    while "$ref" in schema:
        node: Any = _document()
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def _is_mergeable_object(schema: Schema) -> bool:
    keys = {k for k in schema if not k.startswith("x-")}
    additional = schema.get("additionalProperties", True)
    return (
        keys <= MERGEABLE_KEYS
        and schema.get("type", "object") == "object"
        and isinstance(additional, bool)
    )


def _merge_all_of(schema: Schema) -> Schema | None:
    """One object schema equal to `schema`'s allOf, or None when the members are not all
    plain object schemas."""
    members: list[Schema] = []
    for member in schema["allOf"]:
        resolved = _resolve(member)
        if "allOf" in resolved:
            merged_member = _merge_all_of(resolved)
            if merged_member is None:
                return None
            resolved = merged_member
        if not _is_mergeable_object(resolved):
            return None
        members.append(resolved)
    own = {k: v for k, v in schema.items() if k not in ("allOf", "nullable")}
    if not _is_mergeable_object(own):
        return None

    properties: dict[str, Schema] = {}
    required: list[str] = []
    closed = False
    for member in [*members, own]:
        for name, sub in member.get("properties", {}).items():
            properties[name] = {"allOf": [properties[name], sub]} if name in properties else sub
        required.extend(r for r in member.get("required", []) if r not in required)
        closed = closed or member.get("additionalProperties") is False
    merged: Schema = {"type": "object", "properties": properties}
    if required:
        merged["required"] = required
    if closed:
        merged["additionalProperties"] = False
    return merged


def _convert(schema: Schema) -> Schema:
    """An OpenAPI 3.0 schema object as JSON Schema 2020-12 (see the module docstring)."""
    out: Schema
    merged = _merge_all_of(schema) if "allOf" in schema and "$ref" not in schema else None
    if "$ref" in schema:
        # OpenAPI 3.0 ignores a $ref's siblings; `nullable` is still honoured below because
        # BTCPay writes it there meaning exactly that.
        out = {"$ref": schema["$ref"]}
    elif merged is not None:
        out = _convert(merged)
    else:
        out = {}
        for key, value in schema.items():
            if key == "nullable":
                continue
            if key == "properties":
                out[key] = {name: _convert(sub) for name, sub in value.items()}
            elif key in ("items", "not") or (key == "additionalProperties" and value is not True):
                out[key] = _convert(value) if isinstance(value, dict) else value
            elif key in ("allOf", "anyOf", "oneOf"):
                out[key] = [_convert(sub) for sub in value]
            elif key in ("exclusiveMinimum", "exclusiveMaximum") and isinstance(value, bool):
                bound = "minimum" if key == "exclusiveMinimum" else "maximum"
                if value and bound in schema:
                    out[key] = schema[bound]
            elif key in ("minimum", "maximum") and schema.get(f"exclusive{key.title()}") is True:
                continue
            else:
                out[key] = value
    if schema.get("nullable") is True:
        out = {"anyOf": [{"type": "null"}, out]}
    return out


@functools.cache
def _components() -> Schema:
    schemas = _document()["components"]["schemas"]
    return {"components": {"schemas": {name: _convert(s) for name, s in schemas.items()}}}


def _leaves(error: ValidationError) -> list[ValidationError]:
    """The errors under an anyOf/oneOf, without the "not null" branch every nullable
    schema gets: "not valid under any of the given schemas" names no culprit."""
    if not error.context:
        return [error]
    leaves = [
        leaf
        for sub in error.context
        if not (sub.validator == "type" and sub.validator_value == "null")
        for leaf in _leaves(sub)
    ]
    return leaves or [error]


def _problems(schema: Schema, instance: Any, where: str) -> list[str]:
    # The converted components ride along so that "#/components/schemas/..." refs resolve.
    validator = Draft202012Validator({**_components(), **_convert(schema)})
    errors = [leaf for error in validator.iter_errors(instance) for leaf in _leaves(error)]
    return sorted(f"{where} {e.json_path}: {e.message[:300]}" for e in errors)


@functools.cache
def _templates() -> list[tuple[re.Pattern[str], str]]:
    """Path templates as regexes, most literal segments first so that a fixed segment wins
    over a parameter in the same place."""
    templates = [*_document()["paths"], *PATH_ALIASES]
    templates.sort(key=lambda t: -sum(1 for s in t.split("/") if s and not s.startswith("{")))
    return [
        (re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(t)) + "$"), t)
        for t in templates
    ]


def find_operation(method: str, path: str) -> tuple[str, dict[str, Any]] | None:
    """The document's (path template, operation object) for a concrete request."""
    for pattern, template in _templates():
        if pattern.match(path):
            item = _document()["paths"][PATH_ALIASES.get(template, template)]
            operation = item.get(method.lower())
            if operation is not None:
                return template, operation
    return None


def _json_schema_of(container: dict[str, Any]) -> Schema | None:
    content = container.get("content", {}).get("application/json")
    return content.get("schema") if content else None


def _parse(raw: bytes, where: str) -> tuple[Any, list[str]]:
    try:
        return json.loads(raw), []
    except ValueError as e:
        return None, [f"{where}: not JSON ({e})"]


def _check_request(recorded: RecordedRequest, operation: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    security = operation.get("security", _document()["security"])
    if security:
        authorization = recorded.headers.get("authorization", "")
        if not authorization.startswith(("token ", "Basic ")):
            problems.append("request: no `Authorization: token <key>` header")
    request_body = operation.get("requestBody")
    if not recorded.body:
        if request_body and request_body.get("required"):
            problems.append("request: body required but empty")
        return problems
    schema = _json_schema_of(request_body) if request_body else None
    if schema is None:
        return [*problems, "request: the operation takes no JSON body"]
    if not recorded.headers.get("content-type", "").startswith("application/json"):
        problems.append("request: body sent without `Content-Type: application/json`")
    instance, parse_problems = _parse(recorded.body, "request")
    if parse_problems:
        return problems + parse_problems
    return problems + _problems(schema, instance, "request")


def _response_schema(recorded: RecordedRequest, operation: dict[str, Any]) -> Schema | None:
    responses: dict[str, Any] = operation.get("responses", {})
    documented = responses.get(str(recorded.status)) or responses.get("default")
    schema = _json_schema_of(documented) if documented else None
    if schema is None and recorded.status >= 400:
        # Errors the document leaves undescribed (401/403 from the API-key check, 404s,
        # validation failures) still use BTCPay's generic error shapes.
        name = "ValidationProblemDetails" if recorded.status == 422 else "ProblemDetails"
        schema = {"$ref": f"#/components/schemas/{name}"}
    return schema


def _check_response(
    recorded: RecordedRequest, template: str, operation: dict[str, Any]
) -> list[str]:
    responses: dict[str, Any] = operation.get("responses", {})
    problems: list[str] = []
    is_error = recorded.status >= 400
    if str(recorded.status) not in responses and "default" not in responses and not is_error:
        problems.append(f"response: status {recorded.status} is not documented")
    schema = _response_schema(recorded, operation)
    if not recorded.response_body:
        empty_allowed = (recorded.method.upper(), template) in EMPTY_SUCCESS_BODY_ALLOWED
        if schema is not None and not is_error and not empty_allowed:
            problems.append(f"response: empty body for status {recorded.status}")
        return problems
    if schema is None:
        return problems
    instance, parse_problems = _parse(recorded.response_body, "response")
    if parse_problems:
        return problems + parse_problems
    return problems + _problems(schema, instance, "response")


def validate_exchange(recorded: RecordedRequest) -> list[str]:
    """Problems with one recorded request and its answer against the document (empty list:
    valid). Control paths and non-API paths are not checked; the response of a failure the
    test injected is not checked either."""
    if recorded.path.startswith(CONTROL_PREFIX) or not recorded.path.startswith(API_PREFIX):
        return []
    found = find_operation(recorded.method, recorded.path)
    if found is None:
        return [f"no operation {recorded.method} {recorded.path} in the OpenAPI document"]
    template, operation = found
    problems = _check_request(recorded, operation)
    if not recorded.extra.get("injected"):
        problems += _check_response(recorded, template, operation)
    return [f"{recorded.method} {recorded.path}: {p}" for p in problems]


def webhook_event_types() -> list[str]:
    """Event types the document describes a webhook payload for."""
    return list(_document().get("x-webhooks", {}))


def validate_webhook_body(event_type: str, body: bytes | str | dict[str, Any]) -> list[str]:
    """Problems with a webhook payload against the document's schema for `event_type`
    (its `x-webhooks` section)."""
    hook = _document().get("x-webhooks", {}).get(event_type)
    if hook is None:
        return [f"no webhook payload schema for event type {event_type!r}"]
    schema = _json_schema_of(hook["post"]["requestBody"])
    if schema is None:
        return [f"no JSON schema for event type {event_type!r}"]
    if isinstance(body, dict):
        instance: Any = body
    else:
        instance, parse_problems = _parse(
            body.encode() if isinstance(body, str) else body, "webhook"
        )
        if parse_problems:
            return parse_problems
    problems = _problems(schema, instance, "webhook")
    if isinstance(instance, dict) and instance.get("type") != event_type:
        problems.append(f"webhook: type is {instance.get('type')!r}, expected {event_type!r}")
    return problems
