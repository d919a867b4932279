"""Keysat: a self-hosted licensing server paid in Bitcoin."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("keysat")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
