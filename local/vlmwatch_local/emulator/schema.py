"""The request shapes, as strict as the official SDK's own models (``vlmrun.types`` / ``vlmrun.client.types``):
an emulator that accepts anything proves nothing about the real API."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator


class _Url(BaseModel):
    url: str

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not re.match(r"^https?://.+", value):  # the SDK's URL_PATTERN
            raise ValueError("Invalid URL: must start with http:// or https://")
        return value


class MessageContent(BaseModel):
    """The SDK's ``MessageContent``: every ``*_url`` is an object with ``url``, never a bare string."""

    type: Literal["text", "image_url", "video_url", "audio_url", "file_url", "input_file"]
    text: str | None = None
    image_url: _Url | None = None
    video_url: _Url | None = None
    audio_url: _Url | None = None
    file_url: _Url | None = None
    file_id: str | None = None

    @model_validator(mode="after")
    def _matches_type(self) -> MessageContent:
        if self.type == "input_file":
            if self.file_id is None and self.file_url is None:
                raise ValueError("Must have either file_id or file_url")
        elif getattr(self, self.type) is None:
            raise ValueError(f"Must have {self.type}")
        return self


class RequestMetadata(BaseModel):
    environment: Literal["dev", "staging", "prod"] = "dev"
    session_id: str | None = None
    allow_training: bool = True


class ExecutionConfig(BaseModel):
    prompt: str | None = None
    json_schema: dict[str, Any] | None = None


class ExecuteRequest(BaseModel):
    """``POST /agent/execute``: what the SDK's ``agent.execute`` can send, validated the way its models do."""

    name: str | None = None
    inputs: dict[str, str | MessageContent] | None = None
    batch: bool = True
    config: ExecutionConfig | None = None
    metadata: RequestMetadata | None = None
    callback_url: str | None = None
    model: str = "vlmrun-orion-1:auto"
    toolsets: list[str] | None = Field(default=None)
