"""HTTP input validation."""

from __future__ import annotations

import json

import pytest

from chalicelib.errors import InvalidBody, InvalidParameter, PayloadTooLarge
from chalicelib.requests import MAX_ID, parse_ad, parse_id, query_id

AD = {"seller_id": 1, "is_verified_seller": False, "item_id": 1, "name": "iPhone", "description": "ok",
      "category": 1, "images_qty": 2}


@pytest.mark.parametrize("raw", ["1", "42", str(MAX_ID), " 7 "])
def test_valid_ids(raw):
    assert parse_id(raw, "item_id") == int(raw)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [(None, "required"), ("", "required"), ("abc", "integer"), ("1.5", "integer"), ("-3", "positive"),
     ("0", "positive"), (str(MAX_ID + 1), "at most"), ("٣", "integer"), ("1.5", "integer"), ("1e-3", "integer"),
     ("0x10", "integer"), ("NaN", "integer"), ("1e99999999999999999999", "integer"), ("1e19", "at most")],
)
def test_invalid_ids_name_the_parameter(raw, fragment):
    with pytest.raises(InvalidParameter) as err:
        parse_id(raw, "item_id")
    assert err.value.parameter == "item_id" and fragment in err.value.message
    assert err.value.to_dict()["parameter"] == "item_id"


@pytest.mark.parametrize(("raw", "value"), [("42.0", 42), ("4.2e1", 42), ("1e3", 1000), ("5.", 5)])
def test_ids_are_integers_as_json_schema_has_them(raw, value):
    # The document types ids as JSON Schema integers: 42.0 is the integer 42.
    assert parse_id(raw, "item_id") == value


def test_query_id_without_query_string():
    with pytest.raises(InvalidParameter):
        query_id(None, "item_id")


def test_parse_ad_accepts_the_seed_payload():
    ad = parse_ad(json.dumps(AD).encode(), 1024)
    assert ad.features().name == "iPhone" and ad.features().is_verified_seller is False


@pytest.mark.parametrize(
    ("body", "fragment"),
    [(b"", "JSON object"), (b"{bad", "not valid JSON"), (b"[1]", "JSON object"),
     (json.dumps({**AD, "images_qty": -1}).encode(), "images_qty"),
     (json.dumps({**AD, "category": "1"}).encode(), "category"),
     (json.dumps({k: v for k, v in AD.items() if k != "name"}).encode(), "name")],
)
def test_parse_ad_rejects_bad_bodies(body, fragment):
    with pytest.raises(InvalidBody) as err:
        parse_ad(body, 1024)
    assert fragment in err.value.message


def test_parse_ad_rejects_oversize_bodies_before_parsing():
    with pytest.raises(PayloadTooLarge):
        parse_ad(b"{" + b" " * 2000 + b"}", 1024)
