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
    model: Literal["learned", "own", "transformer"] = "learned"
    """`learned` loads the shipped, hash-checked model trained on GoEmotions and our examples
    (`data/model/`); `own` trains the earlier model on our examples only at start-up (for
    comparison); `transformer` loads `model_dir`."""
    model_dir: str | None = None
    """A local Hugging Face text-classification model (GPU nodes); never downloaded."""
