"""Schemathesis against `chalice local` (the `make run` stack), from the
/openapi.json it serves, with make run's API key: every phase and every check,
the auth checks included (requests without the key, or with a wrong one, must be
refused as the document says), except the methods http.server answers before
Chalice (tests/contract/contract_fuzz.py, CHALICE_LOCAL). Any failure (an
undocumented status, a body that is not its schema, a 5xx, a valid request
refused, an invalid one accepted, a request without the key served) fails the
test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.contract.contract_fuzz import CHALICE_LOCAL, run
from tests.e2e.e2e_stack import Stack, settle

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(shared_make_run: Stack) -> Iterator[Stack]:
    yield shared_make_run  # tests/conftest.py: one make run per test process
    settle(shared_make_run)


def test_chalice_local_keeps_its_contract(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    report = run(stack.api, api_key=stack.api_key, **CHALICE_LOCAL)  # type: ignore[arg-type]
    with capsys.disabled():
        print(f"\n[contract, chalice local] {report.summary()}")
    # 34: seed 000's root paths (issue 25), the review loop's 5 routes and the console's 3 files
    # (issue 21), the 8 webhook routes (issue 22)
    assert report.cases > 0 and len(report.operations) == 34, report.summary()
    assert not report.problems(), "\n\n".join(report.problems())
    assert report.server_errors() == 0, report.summary()
