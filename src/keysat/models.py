"""Imports every table so that metadata is complete (migrations, tests)."""

from keysat.access.models import RateBucket, ScopedApiKey, WebSession
from keysat.billing.models import DiscountCode, DiscountRedemption, Invoice
from keysat.catalog.models import Policy, Product
from keysat.db import Base
from keysat.issuer.models import ServerKey
from keysat.licensing.models import License, Machine, ValidationLog
from keysat.operator.models import AuditEntry, JobLease, MerchantProfile, Setting
from keysat.payments.models import (
    BTCPayAuthorizeState,
    PaymentProvider,
    RailPreference,
    SandboxInvoice,
)
from keysat.subscriptions.models import Subscription, SubscriptionCycle, TierChange
from keysat.webhooks.models import WebhookEvent

__all__ = [
    "AuditEntry",
    "BTCPayAuthorizeState",
    "Base",
    "DiscountCode",
    "DiscountRedemption",
    "Invoice",
    "JobLease",
    "License",
    "Machine",
    "MerchantProfile",
    "PaymentProvider",
    "Policy",
    "Product",
    "RailPreference",
    "RateBucket",
    "SandboxInvoice",
    "ScopedApiKey",
    "ServerKey",
    "Setting",
    "Subscription",
    "SubscriptionCycle",
    "TierChange",
    "ValidationLog",
    "WebSession",
    "WebhookEvent",
]
