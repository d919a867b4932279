"""The admin web UI (web.md 11): server-rendered screens that act through the admin API."""
