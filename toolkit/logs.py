"""The one logging setup of the tooling (the shipped app logs with Powertools,
chalicelib/logs.py).

Every tool prints through a module logger; `setup()` is called once by each
command's `main()`. Plain lines on stderr, prefixed with the tool's name, so
`make run`'s interleaved output says who spoke.
"""

from __future__ import annotations

import logging
import sys

_FORMAT = "%(name)s: %(message)s"
_VERBOSE_FORMAT = "%(asctime)s %(name)s %(threadName)s %(levelname)s %(message)s"


def setup(*, verbose: bool = False, level: int = logging.INFO) -> None:
    """Configure the root logger once per process; later calls are no-ops."""
    logging.basicConfig(stream=sys.stderr, level=level, format=_VERBOSE_FORMAT if verbose else _FORMAT)
    # Libraries' INFO lines (botocore's "Found credentials ...", yoyo's every migration step): noise here.
    for noisy in ("botocore", "boto3", "urllib3", "yoyo"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get(name: str) -> logging.Logger:
    """A tool's logger, named after the tool (`run`, `runner`, `deploy`, ...)."""
    return logging.getLogger(name)
