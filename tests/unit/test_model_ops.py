"""`make model-publish` on files: versions name content, not files; errors are one line, exit 2
(ops/models.py against the in-process S3 of tests/unit/test_registry.py)."""

from __future__ import annotations

import pickle
from pathlib import Path

import joblib
import pytest
from sklearn.linear_model import LogisticRegression

from ops import models
from tests.unit.test_registry import BUCKET, endpoint, reg  # noqa: F401 - fixtures
from toolkit.registry import Registry
from training import train


def publish(endpoint_url: str, path: Path) -> int:
    return models.main(["--bucket", BUCKET, "--endpoint-url", endpoint_url, "publish", "--artifact", str(path),
                        "--target-precision", "0.9"])


@pytest.fixture(scope="module")
def pipeline() -> object:
    return train.fit(2000, 5)[0]


def test_the_same_pipeline_from_any_file_is_one_version(reg: Registry, endpoint: str, pipeline: object,  # noqa: F811
                                                        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notebook.pkl").write_bytes(pickle.dumps(pipeline))
    joblib.dump(pipeline, tmp_path / "renamed.joblib")
    assert publish(endpoint, tmp_path / "notebook.pkl") == 0
    first = capsys.readouterr().out
    assert publish(endpoint, tmp_path / "renamed.joblib") == 0
    second = capsys.readouterr().out
    [version] = [m["version"] for m in reg.versions()]
    assert f"published {version}" in first and f"already published (same content), nothing written: {version}" in second
    assert reg.metadata(version)["converted_from"] == "notebook.pkl"  # the first publication's file, in the metadata


@pytest.mark.parametrize(("name", "content", "message"), [
    ("missing.pkl", None, "missing.pkl: cannot read it"),
    ("random.pkl", b"\x17\x99 not a pickle at all", "not a pickle or joblib file of a scikit-learn pipeline"),
    ("bare.joblib", "bare", "expected a scikit-learn Pipeline, got LogisticRegression; supported: Pipeline("),
])
def test_files_it_cannot_serve_are_one_line_and_exit_2(reg: Registry, endpoint: str, tmp_path: Path, name: str,  # noqa: F811
                                                       content: object, message: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / name
    if content == "bare":
        joblib.dump(LogisticRegression().fit([[0, 1], [1, 0], [1, 1], [0, 0]], [0, 1, 1, 0]), path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    assert publish(endpoint, path) == 2
    [record] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert message in record.getMessage() and "\n" not in record.getMessage() and record.exc_info is None
    assert reg.versions() == []
