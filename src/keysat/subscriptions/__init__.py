"""Recurring subscriptions: renewals, lapse, cancel, and tier upgrades and downgrades."""
