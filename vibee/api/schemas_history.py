"""Request and response bodies of the history import routes (same rules as
:mod:`vibee.api.schemas`: requests are strict and forbid unknown fields)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_LIMIT = 1_000_000
JobState = Literal["queued", "running", "done", "failed"]


class HistoryImportRequest(BaseModel):
    """What to import; the body may be left out (every chat, every message)."""

    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, json_schema_extra={"examples": [{"limit": 500}]}
    )

    limit: int | None = Field(
        None,
        ge=1,
        le=MAX_LIMIT,
        description="At most this many messages per chat, counting those imported before "
        "(leave out or null: all of them).",
    )


class HistoryImportOut(BaseModel):
    """A history import job and its progress."""

    model_config = ConfigDict(frozen=True)

    id: int
    session_id: int
    state: JobState = Field(
        description="queued (waiting for the session to be connected), running, done or "
        "failed (see error)."
    )
    limit: int | None = Field(description="Messages per chat asked for (null: all).")
    chats_done: int = Field(description="Chats imported in the current (or last) pass.")
    chats_total: int = Field(description="Chats to import in the current (or last) pass.")
    messages_stored: int = Field(description="Messages stored by this job, all attempts.")
    indexed: int = Field(description="The owner's messages embedded for the twin at the end.")
    attempts: int = Field(description="How many times the job was started (resumed).")
    error: str | None = Field(
        description="Why it failed, or why it was interrupted and queued again."
    )
    created_at: datetime
    started_at: datetime | None
    updated_at: datetime
    finished_at: datetime | None
