"""One botocore data loader per process, for the tests and the local harnesses.

Every botocore session builds its own loader, and a loader caches the service models it parsed (the JSON
files of DynamoDB, S3, SQS...) for its session only. In Lambda that is one parse per cold start. Here a new
session comes with every test (moto's ``mock_aws`` resets boto3's default session, and the runtime's
``wiring.reset()`` drops its botocore session): a third of the suite's CPU went to building clients, half
of that to parsing the same JSON files again (profiled with py-spy, 2026-12-02; docs/PERFORMANCE.md).

:func:`install` makes every session share one loader per data path. A loader only reads files and keeps
what it parsed, and botocore already hands the same parsed model to every client of a session, so sharing
it across sessions changes nothing but the time. Not used by the deployed functions (one session each).
"""

from __future__ import annotations

import functools
from typing import Any

_original: Any = None


def install() -> None:
    """Share loaders from now on (idempotent)."""
    global _original
    import botocore.session

    if _original is not None:
        return
    _original = botocore.session.create_loader
    # ``Session`` calls the module's ``create_loader`` by name, with the AWS_DATA_PATH value (a str or None).
    botocore.session.create_loader = functools.cache(_original)
