"""The review loop on `make run` (issue 21; docs/reviews.md): the moderator console in a real headless
Chromium (Debian's, driven by Playwright: docs/testing.md#the-moderator-consoles-browser-test) going
through claim -> block with a reason -> the task's result shows `decided_by: human`, a lost lease
shown as such, a screenshot under build/; and claim, verdict and appeal over HTTP with keys made by
`make api-key ARGS="--make-run ..."`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.e2e_stack import Stack, http, make_run
from tests.helpers import execute, insert_ad
from tests.reviews_helpers import scored_task

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "build" / "console" / "console-verdict.png"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with make_run(tmp_path_factory) as running:
        yield running


def make_key(stack: Stack, client: str, scope: str) -> str:
    env = {**os.environ, **stack.env, "LOCAL_STATE_DIR": str(stack.state_dir)}
    made = subprocess.run([sys.executable, "-m", "ops.api_keys", "--make-run", "create", client, "--scope", scope, "--json"],
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert made.returncode == 0, made.stderr
    return str(json.loads(made.stdout)["key"])


@pytest.fixture(scope="module")
def keys(stack: Stack) -> dict[str, str]:
    return {name: make_key(stack, name, scope) for name, scope in
            (("mod-1", "moderate"), ("mod-2", "moderate"), ("shop-1", "submit"))}


def browser_path() -> str:
    found = shutil.which(CHROMIUM) or shutil.which("chromium")
    if found is None:
        pytest.fail(f"no Chromium at {CHROMIUM}: `make chromium` installs Debian's (make test does it first)")
    return found


def test_the_console_claims_and_blocks_in_a_real_browser(stack: Stack, keys: dict[str, str]) -> None:
    from playwright.sync_api import expect, sync_playwright

    item = insert_ad(stack.database_url, name="Pistol, no licence needed", description="Cash only, meet at night")
    task = scored_task(stack.database_url, "shop-1", "review", probability=0.42, item_id=item)
    lost = scored_task(stack.database_url, "shop-1", "review", probability=0.2)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browser_path(), headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(stack.api + "/console")
        page.fill("#key", keys["mod-1"])
        page.click("#connect")
        expect(page.locator("#status")).to_contain_text("Queue loaded: 2 task(s)")
        page.keyboard.press("n")  # claim the next (oldest) task
        expect(page.locator("#ad-task")).to_contain_text(f"#{task}")
        expect(page.locator("#ad-name")).to_have_text("Pistol, no licence needed")
        expect(page.locator("#ad-model")).to_contain_text("probability 0.420")
        page.keyboard.press("2")  # the second reason code: prohibited_item
        assert page.locator("#reason").input_value() == "prohibited_item"
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT.with_name("console-claimed.png")), full_page=True)
        page.keyboard.press("b")
        expect(page.locator("#result")).to_contain_text('"decided_by": "human"')
        expect(page.locator("#depth")).to_have_text("(1)")  # the decided task left the queue
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        # A lease lost meanwhile (expired here) is said so, and the verdict is not recorded.
        page.keyboard.press("n")
        expect(page.locator("#ad-task")).to_contain_text(f"#{lost}")
        execute(stack.database_url, "UPDATE human_reviews SET lease_expires_at = now() - interval '1 second' "
                                    "WHERE task_id = %s", (lost,))
        page.click("#allow")
        expect(page.locator("#status")).to_contain_text(f"Lease lost on task #{lost}")
        browser.close()
    assert SCREENSHOT.stat().st_size > 10_000
    status, result = http("GET", f"{stack.api}/moderation/moderation_result/{task}", key=keys["shop-1"])
    assert status == 200
    assert (result["decision"], result["decided_by"], result["reviewed_by"], result["review_reason"]) == \
        ("block", "human", "mod-1", "prohibited_item")
    assert result["model_decision"] == "review" and result["probability"] == 0.42
    status, lost_result = http("GET", f"{stack.api}/moderation/moderation_result/{lost}", key=keys["shop-1"])
    assert lost_result["decision"] == "review" and lost_result["decided_by"] == "model"


def test_claim_verdict_and_appeal_over_http(stack: Stack, keys: dict[str, str]) -> None:
    api, mod1, mod2, shop = stack.api, keys["mod-1"], keys["mod-2"], keys["shop-1"]
    task = scored_task(stack.database_url, "shop-1", "review")
    assert http("POST", f"{api}/moderation/reviews/{task}/claim", b"", key=mod1)[0] == 200
    status, body = http("POST", f"{api}/moderation/reviews/{task}/claim", b"", key=mod2)
    assert (status, body["code"]) == (409, "lease_held")
    verdict = json.dumps({"decision": "block", "reason": "spam"}).encode()
    assert http("POST", f"{api}/moderation/reviews/{task}/verdict", verdict, key=mod2)[1]["code"] == "lease_required"
    status, decided = http("POST", f"{api}/moderation/reviews/{task}/verdict", verdict, key=mod1)
    assert (status, decided["decided_by"], decided["decision"]) == (200, "human", "block")
    status, accepted = http("POST", f"{api}/moderation/appeals", json.dumps({"task_id": task, "reason": "not spam"}).encode(),
                            key=shop)
    assert (status, accepted["appeal"]) == (202, "pending")
    assert http("POST", f"{api}/moderation/reviews/{task}/claim", b"", key=mod1)[1]["code"] == "four_eyes"
    assert http("POST", f"{api}/moderation/reviews/{task}/claim", b"", key=mod2)[0] == 200
    allow = json.dumps({"decision": "allow", "reason": "other"}).encode()
    status, final = http("POST", f"{api}/moderation/reviews/{task}/verdict", allow, key=mod2)
    assert (status, final["appeal"], final["decision"], final["reviewed_by"]) == (200, "overturned", "allow", "mod-2")
    status, trail = http("GET", f"{api}/moderation/moderation_result/{task}/events", key=shop)
    assert [e["kind"] for e in trail["events"]][-5:] == ["claimed", "reviewed", "appealed", "claimed", "appeal_decided"]
    status, health = http("GET", f"{api}/health/pipeline")
    assert health["reviews"] is not None and health["reviews"]["appeal"] == 0
