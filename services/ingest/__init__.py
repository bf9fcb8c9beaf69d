"""Ingest service: the edge where customers' messages come in and replies go out."""
