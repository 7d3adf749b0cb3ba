"""HTTP input validation."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.api.models import CURSOR_PATTERN
from chalicelib.api.requests import MAX_ID, TaskQuery, decode_cursor, encode_cursor, parse_ad, parse_id, query_id, task_query
from chalicelib.errors import InvalidBody, InvalidParameter, PayloadTooLarge

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


@given(st.integers(min_value=0, max_value=MAX_ID))
def test_a_cursor_is_any_id_and_matches_the_documents_pattern(task_id):
    cursor = encode_cursor(task_id)
    assert re.fullmatch(CURSOR_PATTERN, cursor) and decode_cursor(cursor) == task_id


@settings(max_examples=300)
@given(st.from_regex(re.compile(CURSOR_PATTERN.replace("$", r"\Z")), fullmatch=True))
def test_every_cursor_the_document_allows_is_accepted_and_is_canonical(cursor):
    # What the fuzzer draws as valid is valid here: no 400 for a well-formed cursor.
    assert encode_cursor(decode_cursor(cursor)) == cursor


@pytest.mark.parametrize(
    "cursor", ["", "42", "AAAAAAAAAA", "AAAAAAAAAAAA", "AAAAAAAAAAA=", "AAAAAAAAAAB", "gAAAAAAAAAA", "AAAA+AAAAAA", "ÅAAAAAAAAAA"]
)
def test_malformed_cursors_name_the_parameter(cursor):
    with pytest.raises(InvalidParameter) as err:
        decode_cursor(cursor)
    assert err.value.parameter == "cursor"


def test_task_query_defaults_and_values():
    assert task_query(None) == TaskQuery(item_id=None, status=None, before_id=None, limit=20)
    query = task_query({"item_id": "7", "status": "failed", "limit": "100", "cursor": encode_cursor(99), "other": ""})
    assert query == TaskQuery(item_id=7, status="failed", before_id=99, limit=100)


@pytest.mark.parametrize(
    ("params", "parameter", "fragment"),
    [({"item_id": "0"}, "item_id", "positive"), ({"item_id": ""}, "item_id", "empty"), ({"status": "done"}, "status", "one of"),
     ({"status": " "}, "status", "empty"), ({"limit": "0"}, "limit", "positive"), ({"limit": "101"}, "limit", "at most 100"),
     ({"limit": "x"}, "limit", "integer"), ({"cursor": "x"}, "cursor", "next_cursor")],
)
def test_task_query_errors_name_the_parameter(params, parameter, fragment):
    with pytest.raises(InvalidParameter) as err:
        task_query(params)
    assert err.value.parameter == parameter and fragment in err.value.message


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
