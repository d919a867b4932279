"""The OpenAPI document fuzzed against a real `keysat serve` (ARCHITECTURE.md, the fuzz row;
issue 6): schemathesis sends generated requests, valid and invalid, to every documented
operation with the master key, and fails on a 500, on a status the document does not list
for the operation, and on a body that breaks the documented schema of its status.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.harness import ADMIN_KEY, KeysatServer, launch_server

pytestmark = [pytest.mark.e2e, pytest.mark.fuzz]

SCHEMATHESIS = Path(sys.executable).with_name("st")
RUN_DEADLINE_SECONDS = 300

# 502 and 503 are documented answers (a provider or rate source that failed, a provider
# that is not configured); status_code_conformance keeps them to the operations that list
# them. Only a 500, an unexpected failure of ours, is a server error here.
CONFIG = """
[checks.not_a_server_error]
expected-statuses = ["1XX", "2XX", "3XX", "4XX", "502", "503"]
"""

CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance"

# Operations left out, each because its effect would break the rest of the run.
EXCLUDED: dict[str, str] = {}


def closed(node: Any) -> Any:
    """The document with every object schema closed to fields it does not name: the served
    document leaves them open so clients tolerate new fields, but a field the server sends
    and the document leaves out is a missing field, and this makes it a schema break."""
    if isinstance(node, list):
        return [closed(item) for item in node]
    if not isinstance(node, dict):
        return node
    copy = {key: closed(value) for key, value in node.items()}
    if "properties" in copy and "additionalProperties" not in copy:
        copy["additionalProperties"] = False
    return copy


def with_known_ids(document: dict[str, Any], known: dict[str, str]) -> dict[str, Any]:
    """Path parameters narrowed to ids of rows that exist, so that requests reach the
    handlers' real work instead of stopping at a 404 for a random id."""
    for item in document["paths"].values():
        for operation in item.values():
            for parameter in operation.get("parameters", ()):
                if parameter["in"] == "path" and parameter["name"] in known:
                    parameter["schema"] = {"type": "string", "enum": [known[parameter["name"]]]}
    return document


def seed(server: KeysatServer) -> dict[str, str]:
    """One row of each kind the admin API looks up by id, and what names them."""
    product = server.create_product("fuzz")
    policy = server.create_policy("fuzz", "fuzz-pro", price_sats=2000)
    license_row = server.issue_license("fuzz", policy_slug="fuzz-pro")
    code = server.admin_post(
        "/v1/admin/discount-codes",
        {"code": "FUZZ10", "kind": "percent", "amount": 10},
    )
    endpoint = server.admin_post(
        "/v1/admin/webhook-endpoints",
        {"url": "http://127.0.0.1:9/hook", "event_types": ["*"]},
    )
    profiles = server.admin.get("/v1/admin/merchant-profiles").json()
    key = server.admin_post("/v1/admin/api-keys", {"label": "fuzz", "role": "read-only"})
    purchase = server.admin.post(
        "/v1/purchase", json={"product": "fuzz", "policy_slug": "fuzz-pro"}
    ).json()
    return {
        "product_id": product["id"],
        "policy_id": policy["id"],
        "license_id": license_row["license_id"],
        "code_id": code["id"],
        "endpoint_id": endpoint["id"],
        "profile_id": profiles["profiles"][0]["id"],
        "key_id": key["id"],
        "invoice_id": purchase["invoice_id"],
        "slug": "fuzz",
        "currency": "USD",
        "rail": "lightning",
        "name": "session_reaper",
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeysatServer]:
    """Sandbox mode, so the sandbox invoice and clock calls answer instead of 404."""
    work = tmp_path_factory.mktemp("keysat-fuzz")
    with launch_server(work, {"KEYSAT_SANDBOX_MODE": "true"}) as running:
        yield running


def test_schemathesis_finds_no_server_error_and_no_schema_break(
    server: KeysatServer, tmp_path: Path
) -> None:
    document = with_known_ids(server.admin.get("/v1/openapi.json").json(), seed(server))
    schema_path = tmp_path / "openapi.json"
    schema_path.write_text(json.dumps(closed(document)))
    config_path = tmp_path / "schemathesis.toml"
    config_path.write_text(CONFIG)
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(config_path),
        "--no-color",
        "run",
        str(schema_path),
        "--url",
        server.base_url,
        "--header",
        f"Authorization: Bearer {ADMIN_KEY}",
        "--checks",
        CHECKS,
        "--max-examples",
        "10",
        "--seed",
        "20260101",
        "--generation-deterministic",
        "--workers",
        "2",
        "--no-shrink",
        "--output-truncate",
        "false",
    ]
    for operation in EXCLUDED:
        method, path = operation.split(" ", 1)
        command += ["--exclude-by", f"method == {method} and path == {path}"]
    result = subprocess.run(
        command,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=RUN_DEADLINE_SECONDS,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-30000:] + result.stderr[-5000:]
