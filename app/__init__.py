"""Kindred's wiring: settings, database client, HTTP and GraphQL apps, CLI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kindred-cdp")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
