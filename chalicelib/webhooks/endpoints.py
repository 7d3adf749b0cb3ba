"""A client's webhook endpoints (issue 22; docs/webhooks.md#endpoints): register, list, delete,
rotate the secret, enable again, send a test, read the attempts, replay. A client sees only its
own endpoints; another's answers the 404 of one that does not exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from chalicelib.domain.webhooks import (
    ENDPOINT_ENABLED,
    SUBSCRIBABLE,
    TEST,
    UrlRefused,
    check_url,
    new_endpoint_id,
    new_secret,
)
from chalicelib.errors import InvalidBody
from chalicelib.sealing import Sealer
from chalicelib.storage.webhooks import WebhookStore
from chalicelib.webhooks.sender import Sender
from chalicelib.webhooks.settings import WebhookSettings

ATTEMPTS_PAGE = 100


class Endpoints:
    def __init__(self, store: WebhookStore, sender: Sender, sealer: Sealer, settings: WebhookSettings) -> None:
        self._store, self._sender, self._sealer, self._settings = store, sender, sealer, settings

    def create(self, client: str, url: str, events: Sequence[str]) -> dict[str, Any]:
        """The endpoint, with its secret: the only time the secret is shown."""
        try:
            check_url(url, allow_http=self._settings.allow_http, allow_private=self._settings.allow_private)
        except UrlRefused as exc:
            raise InvalidBody(f"url: {exc}", [{"field": "url", "message": str(exc)}]) from None
        unknown = sorted(set(events) - set(SUBSCRIBABLE))
        if unknown:
            raise InvalidBody(f"events: unknown event types {unknown[:5]}; known: {', '.join(SUBSCRIBABLE)}",
                              [{"field": "events", "message": "unknown event type"}])
        secret = new_secret()
        row = self._store.create_endpoint(client, new_endpoint_id(), url, sorted(set(events)), self._sealer.seal(secret))
        return {**row, "secret": secret}

    def all(self, client: str) -> list[dict[str, Any]]:
        return self._store.endpoints(client)

    def delete(self, client: str, endpoint_id: str) -> None:
        self._store.delete_endpoint(client, endpoint_id)

    def rotate(self, client: str, endpoint_id: str) -> dict[str, Any]:
        """A new secret (shown once); the old one keeps signing until `previous_secret_expires_at`."""
        secret = new_secret()
        row = self._store.rotate(client, endpoint_id, self._sealer.seal(secret), self._settings.rotation_overlap_seconds)
        return {**row, "secret": secret, "previous_secret_expires_at": row.pop("previous_until")}

    def enable(self, client: str, endpoint_id: str) -> dict[str, Any]:
        row, due = self._store.enable(client, endpoint_id, ENDPOINT_ENABLED)
        self._sender.publish(due)
        return row

    def test(self, client: str, endpoint_id: str) -> dict[str, Any]:
        due = self._store.send_test(client, endpoint_id, TEST)
        self._sender.publish(due)
        return {"endpoint_id": endpoint_id, "event_type": TEST, "deliveries": len(due)}

    def attempts(self, client: str, endpoint_id: str) -> list[dict[str, Any]]:
        return self._store.attempts(client, endpoint_id, ATTEMPTS_PAGE)

    def replay(self, client: str, endpoint_id: str, since: datetime) -> dict[str, Any]:
        due = self._store.replay(client, endpoint_id, since)
        self._sender.publish(due)
        return {"endpoint_id": endpoint_id, "since": since, "deliveries": len(due)}
