"""Audit service: an append-only, tamper-evident record of every event on every topic."""
