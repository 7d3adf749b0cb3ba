"""Webhook secrets at rest (issue 22; docs/webhooks.md#safe-to-run-on-the-internet): sealed before they reach the
database, opened by the sender to sign. With WEBHOOK_KMS_KEY_ID (the deployed stack) a secret is
stored as KMS ciphertext, `kms:<base64>`; without it (`make run`, the tests), as `plain:<secret>`.
A secret is never logged: errors here name the key, never the value.
"""

from __future__ import annotations

import base64
import threading
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.errors import TransientError
from chalicelib.logs import logger

_CONTEXT = {"purpose": "webhook-endpoint-secret"}  # KMS encryption context: a ciphertext is for this only


class Sealer:
    """KMS when a key is configured, else plain; opened secrets are cached per warm container."""

    def __init__(self, kms: Any | None, key_id: str | None) -> None:
        self._kms, self._key_id = kms, key_id
        self._opened: dict[str, str] = {}
        self._lock = threading.Lock()

    def seal(self, secret: str) -> str:
        if not self._key_id or self._kms is None:
            return "plain:" + secret
        try:
            blob = self._kms.encrypt(KeyId=self._key_id, Plaintext=secret.encode(), EncryptionContext=_CONTEXT)
        except (BotoCoreError, ClientError) as exc:
            logger.warning("KMS encrypt failed", extra={"key_id": self._key_id, "error": type(exc).__name__})
            raise TransientError("the key service is unavailable") from None
        return "kms:" + base64.b64encode(blob["CiphertextBlob"]).decode()

    def open(self, sealed: str) -> str:
        if sealed.startswith("plain:"):
            return sealed.removeprefix("plain:")
        with self._lock:
            if sealed in self._opened:
                return self._opened[sealed]
        if not sealed.startswith("kms:") or self._kms is None:
            raise TransientError("a webhook secret is sealed with KMS, and no KMS client is configured")
        try:
            plain = self._kms.decrypt(CiphertextBlob=base64.b64decode(sealed.removeprefix("kms:")),
                                      EncryptionContext=_CONTEXT)["Plaintext"].decode()
        except (BotoCoreError, ClientError) as exc:
            logger.warning("KMS decrypt failed", extra={"error": type(exc).__name__})
            raise TransientError("the key service is unavailable") from None
        with self._lock:
            if len(self._opened) > 1000:
                self._opened.clear()
            self._opened[sealed] = plain
        return plain
