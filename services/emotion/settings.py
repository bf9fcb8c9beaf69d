"""Emotion service settings (env prefix `CBD_EMOTION_`)."""

from typing import ClassVar, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class EmotionSettings(ServiceSettings):
    """How the emotion service runs."""

    model_config = SettingsConfigDict(env_prefix="CBD_EMOTION_", extra="ignore")

    uses_postgres: ClassVar[bool] = False

    port: int = 8001
    session_ttl_s: int = Field(default=24 * 3600, ge=60)
    """How long a conversation's emotional trajectory is kept after its last turn."""
    model: Literal["learned", "routed", "transformer"] = "learned"
    """`learned` trains the built-in model at start-up; `routed` loads the hash-checked routed
    model trained with GoEmotions (`data/model/`); `transformer` loads `model_dir`."""
    model_dir: str | None = None
    """A local Hugging Face text-classification model (GPU nodes); never downloaded."""
