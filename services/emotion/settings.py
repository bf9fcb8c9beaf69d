"""Emotion service settings (env prefix `CBD_EMOTION_`)."""

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class EmotionSettings(ServiceSettings):
    """How the emotion service runs."""

    model_config = SettingsConfigDict(env_prefix="CBD_EMOTION_", extra="ignore")

    port: int = 8001
