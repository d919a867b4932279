"""Process-wide state shared by routes: settings, database, keys, limiters."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from starlette.requests import Request

from keysat.access.ratelimit import RateLimiter
from keysat.access.selflicense import SelfLicensing
from keysat.access.service import Access, MasterKey
from keysat.access.sessions import Sessions
from keysat.access.tier import Tier, current_tier
from keysat.billing.purchase import Purchases
from keysat.billing.rates import RateService
from keysat.billing.settlement import Settlement
from keysat.db import Database
from keysat.issuer.service import IssuerKeys
from keysat.jobs import JobRunner
from keysat.licensing.jobs import WriteBehind
from keysat.licensing.keyauth import KeyReader
from keysat.licensing.machines import MachineEndpoints
from keysat.licensing.validation import Validator
from keysat.operator.community import CommunityHeartbeat
from keysat.payments.service import Providers
from keysat.settings import Settings
from keysat.subscriptions.clock import SandboxClock
from keysat.subscriptions.upgrades import TierChanges


@dataclass
class AppState:
    settings: Settings
    db: Database
    master_key: MasterKey
    access: Access
    sessions: Sessions
    issuer_keys: IssuerKeys
    rate_limiter: RateLimiter
    write_behind: WriteBehind
    key_reader: KeyReader
    validator: Validator
    machines: MachineEndpoints
    http: httpx.AsyncClient
    rates: RateService
    providers: Providers
    settlement: Settlement
    purchases: Purchases
    jobs: JobRunner
    self_license: SelfLicensing
    tier_changes: TierChanges
    sandbox_clock: SandboxClock
    community: CommunityHeartbeat

    def tier(self) -> Tier:
        return current_tier(self.settings, self.self_license.current)


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.keysat
    return state
