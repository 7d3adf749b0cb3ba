"""Validation of what HTTP clients send: ids in the query or path, ad bodies.

Pure functions; each failure is a domain error naming the parameter.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from chalicelib.errors import InvalidBody, InvalidParameter, PayloadTooLarge
from chalicelib.features import MAX_CATEGORY, MAX_DESCRIPTION_CHARS, MAX_IMAGES, MAX_NAME_CHARS, AdFeatures

# Ids are PostgreSQL BIGINTs.
MAX_ID = 2**63 - 1


def parse_id(raw: str | None, name: str) -> int:
    if raw is None or raw.strip() == "":
        raise InvalidParameter(name, f"{name} is required")
    text = raw.strip()
    if not (text.isascii() and text.lstrip("-+").isdigit()):
        raise InvalidParameter(name, f"{name} must be an integer, got {raw!r}")
    value = int(text)
    if value < 1:
        raise InvalidParameter(name, f"{name} must be a positive integer, got {value}")
    if value > MAX_ID:
        raise InvalidParameter(name, f"{name} must be at most {MAX_ID}")
    return value


def query_id(params: Mapping[str, str] | None, name: str) -> int:
    return parse_id((params or {}).get(name), name)


class AdRequest(BaseModel):
    """Body of POST /moderation/predict (the seeds' AdRequest)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    seller_id: StrictInt = Field(gt=0, le=MAX_ID)
    is_verified_seller: StrictBool
    item_id: StrictInt = Field(gt=0, le=MAX_ID)
    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    description: str = Field(default="", max_length=MAX_DESCRIPTION_CHARS)
    category: StrictInt = Field(ge=0, le=MAX_CATEGORY)
    images_qty: StrictInt = Field(ge=0, le=MAX_IMAGES)

    def features(self) -> AdFeatures:
        return AdFeatures.of(self)


def parse_ad(raw_body: bytes | str | None, max_bytes: int) -> AdRequest:
    body = raw_body.encode() if isinstance(raw_body, str) else (raw_body or b"")
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"request body is {len(body)} bytes; the limit is {max_bytes}")
    if not body.strip():
        raise InvalidBody("request body must be a JSON object with the ad")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidBody(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidBody("request body must be a JSON object")
    try:
        return AdRequest.model_validate(data)
    except ValidationError as exc:
        errors: list[dict[str, object]] = [
            {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()
        ]
        fields = ", ".join(str(e["field"]) for e in errors)
        raise InvalidBody(f"invalid ad: {fields}", errors) from exc
