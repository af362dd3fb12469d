"""The gateway's refusals: an HTTP status, a short machine code and a message.

Every error response has the body ``{"error": code, "detail": message}``; the app's exception
handlers turn :class:`ApiError` (and FastAPI's own errors) into it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ApiError"]


class ApiError(Exception):
    """A refusal: ``status`` (4xx, or 503 when a dependency is down), ``error`` a short code.

    Attributes:
        extra: More fields of the response body (e.g. ``problems`` of a 422).
    """

    def __init__(self, status: int, error: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.extra = extra

    def body(self) -> dict[str, Any]:
        """The JSON response body."""
        return {"error": self.error, "detail": self.detail, **self.extra}
