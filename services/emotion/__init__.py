"""Emotion service: how the customer feels, per message."""
