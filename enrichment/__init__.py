"""Enrichment: third-party data matched through identity and merged through profiles."""
