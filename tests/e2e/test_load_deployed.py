"""`make load`, small, on the packaged stack deployed to LocalStack (API key, API Gateway, Lambda,
LocalStack's own event source mapping): the session's `deployed` stack, which the module before left
settled (tests/conftest.py). The checks are test_load.py's."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.deployed_stack import Deployed
from tests.e2e.e2e_stack import settle
from tests.e2e.test_load import check_results, run_load, show
from tests.helpers import verdicts_counted

pytestmark = pytest.mark.e2e
# LocalStack's event source mapping drains ~7 tasks/s (one batch at a time): 120 submits keep
# the deployed run to ~20 s and still put 16 clients on API Gateway and the Lambda at once.
DEPLOYED_SUBMITS = 120
# While it drains, each client polls a task every 2 s instead of every 0.5 s: at 0.5 s the drain's
# polls were most of the run's requests (each an API Gateway request and a Lambda invocation,
# ~30 ms of LocalStack's CPU), and a poll finds nothing new sooner than the mapping's next batch.
DRAIN_POLL_SECONDS = 2.0


def test_load_on_the_deployed_stack(deployed: Deployed, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    settle(deployed)  # nothing of another module's still in flight, to be counted as this load's
    with verdicts_counted(deployed.database_url):
        # The write routes need the key there; without it every submit would be a 403.
        results = run_load(deployed.d.api_url, tmp_path / "results.json", items="1-20", api_key=deployed.d.api_key,
                           submits=DEPLOYED_SUBMITS, drain_poll=DRAIN_POLL_SECONDS)
        assert results["config"]["api_key_sent"]
        check_results(results, deployed.database_url, submits=DEPLOYED_SUBMITS)
    show("deployed", results, capsys)
