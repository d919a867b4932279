"""Process-wide state shared by routes: settings, database, keys, limiters."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from keysat.access.ratelimit import RateLimiter
from keysat.access.service import MasterKey
from keysat.db import Database
from keysat.issuer.service import IssuerKeys
from keysat.licensing.jobs import WriteBehind
from keysat.licensing.keyauth import KeyReader
from keysat.licensing.machines import MachineEndpoints
from keysat.licensing.validation import Validator
from keysat.settings import Settings


@dataclass
class AppState:
    settings: Settings
    db: Database
    master_key: MasterKey
    issuer_keys: IssuerKeys
    rate_limiter: RateLimiter
    write_behind: WriteBehind
    key_reader: KeyReader
    validator: Validator
    machines: MachineEndpoints


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.keysat
    return state
