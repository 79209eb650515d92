"""What the emulated account holds: executions, files and uploads, artifacts; and a tally of what it served."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from vlmwatch.core.lifecycle import REMOTE_ENDED


@dataclass
class Execution:
    """One agent execution: its plan of statuses, how far along it is, and what it found."""

    id: str
    name: str
    created_at: float
    plan: list[str]
    outcome: str  # completed | failed | stuck
    request: dict[str, Any]
    step: int = 0
    completed_at: float | None = None
    response: dict[str, Any] | None = None
    error: str | None = None
    facts: dict[str, Any] | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    callback_sent: bool = False
    answered: bool = True  # False: the POST that created it hung past the caller's timeout (ambiguous)

    @property
    def status(self) -> str:
        return self.plan[min(self.step, len(self.plan) - 1)]

    @property
    def ended(self) -> bool:
        return self.status in REMOTE_ENDED

    def to_json(self, *, echo_inputs: bool = False) -> dict[str, Any]:
        """The execution as ``POST /agent/execute`` and ``GET /agent/executions/{id}`` return it: the SDK's
        ``AgentExecutionResponse`` fields, and with ``echo_inputs`` the ``inputs`` (and inline ``config``)
        it was created with, as the agent-execution docs show."""
        body: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "created_at": datetime.fromtimestamp(self.created_at, UTC).isoformat(),
            "completed_at": datetime.fromtimestamp(self.completed_at, UTC).isoformat() if self.completed_at else None,
            "response": self.response if self.status == "completed" else None,
            "usage": self.usage,
        }
        if self.status == "failed":
            body["error"] = {"message": self.error, "type": "execution_error"}
        if echo_inputs:
            body["inputs"] = self.request.get("inputs")
            if self.request.get("config") is not None:
                body["config"] = self.request["config"]
        return body


def file_record(file_id: str, filename: str, size: int, ctype: str | None, public_url: str) -> dict[str, Any]:
    """A file as the files API describes it."""
    return {
        "id": file_id,
        "filename": filename,
        "bytes": size,
        "purpose": "assistants",
        "created_at": datetime.now(UTC).isoformat(),
        "object": "file",
        "content_type": ctype,
        "public_url": f"{public_url}/files/{file_id}/content",
    }


@dataclass
class State:
    """Everything the account holds, and what it served (``requests``: by route, and the per-request
    faults by name: ``429``, ``5xx``, ``hang``; ``callbacks``: every callback sent or dropped)."""

    executions: dict[str, Execution] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    uploads: dict[str, bytes] = field(default_factory=dict)
    artifacts: dict[tuple[str, str], tuple[bytes, str]] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)
    callbacks: list[dict[str, Any]] = field(default_factory=list)
