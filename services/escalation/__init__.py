"""Escalation service: bot or human, decided by policy over structured signals."""
