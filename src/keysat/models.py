"""Imports every table so that metadata is complete (migrations, tests)."""

from keysat.access.models import RateBucket
from keysat.billing.models import Invoice
from keysat.catalog.models import Policy, Product
from keysat.db import Base
from keysat.issuer.models import ServerKey
from keysat.licensing.models import License, Machine, ValidationLog
from keysat.operator.models import AuditEntry, MerchantProfile, Setting
from keysat.webhooks.models import WebhookEvent

__all__ = [
    "AuditEntry",
    "Base",
    "Invoice",
    "License",
    "Machine",
    "MerchantProfile",
    "Policy",
    "Product",
    "RateBucket",
    "ServerKey",
    "Setting",
    "ValidationLog",
    "WebhookEvent",
]
