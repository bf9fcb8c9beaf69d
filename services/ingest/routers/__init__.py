"""Ingest's HTTP and WebSocket surface, one router per area; each only translates."""
