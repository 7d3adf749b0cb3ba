"""Domain errors. Adapters raise these; chalicelib/api/responses.py maps them to HTTP
in one place (`handle_errors`), by the status and code each one carries.

The scorer retries a batch that raised `TransientError` (or anything else);
what fails a task for good is decided by chalicelib/scoring/dispositions.py, from facts
(a malformed body, an unknown task, a deleted ad, invalid features).
"""

from __future__ import annotations


class ModerationError(Exception):
    """Base class: carries the HTTP status and machine code it maps to."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, object]:
        # `detail` mirrors `message` for clients written for the FastAPI seeds.
        return {"code": self.code, "message": self.message, "detail": self.message}


class InvalidParameter(ModerationError):
    status_code = 400
    code = "invalid_parameter"

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "parameter": self.parameter}


class InvalidBody(ModerationError):
    status_code = 400
    code = "invalid_body"

    def __init__(self, message: str, errors: list[dict[str, object]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "errors": self.errors}


class PayloadTooLarge(ModerationError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(ModerationError):
    status_code = 415
    code = "unsupported_media_type"


class IdempotencyKeyMismatch(ModerationError):
    """The Idempotency-Key was first used for another item: a client bug
    (a reused key), never silently answered with the other item's task."""

    status_code = 409
    code = "idempotency_key_mismatch"


class Forbidden(ModerationError):
    """The gateway verified the key, but it is not a client's (docs/clients.md)."""

    status_code = 403
    code = "forbidden"


class InsufficientScope(Forbidden):
    """The client lacks every scope the route needs (chalicelib/api/routes.py, SCOPES)."""

    code = "insufficient_scope"


class NotFound(ModerationError):
    status_code = 404
    code = "not_found"


class AdNotFound(NotFound):
    code = "ad_not_found"


class TaskNotFound(NotFound):
    code = "task_not_found"


class Overloaded(ModerationError):
    """Refused before any work, to keep the answers of the requests in flight fast: `make run`'s
    bound on requests in flight (devstack/chalice_local.py). Nothing was stored; retry after
    Retry-After. On AWS the API function's reserved concurrency is the bound, and API Gateway
    answers for it (infra/resources.json, GatewayResponses)."""

    status_code = 503
    code = "overloaded"


class TransientError(ModerationError):
    """A dependency is down or slow; the same call may succeed later."""

    status_code = 503
    code = "dependency_unavailable"


class ReviewConflict(ModerationError):
    """A claim, verdict or appeal the review loop's rules refuse (chalicelib/domain/reviews.py):
    409 with the rule's own code (lease_held, lease_required, not_in_queue, four_eyes,
    not_blocked, already_appealed, appeal_window_closed)."""

    status_code = 409
    code = "conflict"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class EndpointNotFound(NotFound):
    """A webhook endpoint that does not exist, or is another client's (the same 404: issue 22)."""

    code = "endpoint_not_found"
