"""stepfunctions mode: start a job's poller state machine, and release one that waits on a callback."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from vlmwatch.adapters.aws_errors import AwsErrorKind, classify

logger = logging.getLogger(__name__)


class PollerStateMachine:
    """The poller state machine (``statemachine/poller.asl.json``), one execution per submitted job.

    Args:
        sfn: zero-argument callable returning a Step Functions client (built on first use).
        arn: the state machine; None outside stepfunctions mode (then :meth:`start` does nothing).
    """

    def __init__(self, sfn: Callable[[], Any], arn: str | None) -> None:
        self._sfn = sfn
        self._arn = arn

    def start(self, job_id: str, submitted_at: int, first_wait: int) -> None:
        """Named by job id and submit time: a name stays taken for 90 days after its execution closes,
        so the job id alone would block tracking a re-sent event after the row expired. If this start
        is lost, the sweeper polls the job itself once it is overdue."""
        if not self._arn:
            return
        try:
            self._sfn().start_execution(
                stateMachineArn=self._arn,
                name=f"{job_id}-{submitted_at}",
                input=json.dumps({"job_id": job_id, "wait_seconds": first_wait}),
            )
        except ClientError as exc:
            if classify(exc) != AwsErrorKind.ALREADY_EXISTS:
                logger.warning("tracker not started; the sweeper covers it", extra={"job_id": job_id})

    def release(self, job_id: str, token: str, status: str) -> bool:
        """End an execution waiting in AwaitCallback: the job left flight, so it has nothing left to wait for.

        Returns False when that wait was already over (its timeout fell back to a poll, or the execution
        stopped): the poll sees the job finished. Never raises: a release that fails costs only the
        fallback poll at the token's timeout, never the job.
        """
        try:
            self._sfn().send_task_success(
                taskToken=token, output=json.dumps({"job_id": job_id, "status": status, "done": True})
            )
        except ClientError as exc:
            if classify(exc) != AwsErrorKind.NOT_FOUND:
                logger.warning(
                    "state machine not released; it polls at its timeout",
                    extra={"job_id": job_id, "error": exc.response.get("Error", {}).get("Code")},
                )
            return False
        return True
