"""Segments: the rule language, membership evaluation in MongoDB and in real time."""
