"""Segment-compatible ingest: write keys, validation, the durable event log, and quarantine."""
