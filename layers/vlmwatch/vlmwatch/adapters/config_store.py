"""Configuration versions, stored in the job table and read through powertools Parameters' cache.

Why the job table: every function can already read it (no new grant, no new resource), an item holds
400 KB (a hundred real JSON schemas), and a transaction makes a push all-or-nothing. Rows:

- ``#config``: the version in effect (``current_version``, and the whole version as JSON in ``config``);
  the functions read this one row, through ``DynamoDBProvider`` with a max age.
- ``#config#v000007``: every version ever pushed, kept for ``history`` and ``rollback`` (no TTL).

A push writes the new version's row and moves ``#config`` in one ``TransactWriteItems``, on the condition
that ``#config`` still names the version the pusher validated against: two operators pushing at once
cannot both win, and a function never reads half a configuration (one item is read whole).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from vlmwatch.adapters.aws_errors import error_code
from vlmwatch.core.config import ConfigVersion, PipelineConfig
from vlmwatch.core.errors import ConfigError
from vlmwatch.core.job import CONTROL_ROW_PREFIX

logger = logging.getLogger(__name__)

CURRENT_ROW = f"{CONTROL_ROW_PREFIX}config"
VALUE_ATTR = "config"


def version_row(number: int) -> str:
    return f"{CURRENT_ROW}#v{number:06d}"


class ConfigConflictError(ConfigError):
    """Someone else pushed a configuration since this one was validated against the current version."""


class ConfigStore:
    """Push, read and list configuration versions (the operator's side: the CLI, and tests).

    Args:
        client: a low-level DynamoDB client.
        table: the job table.
        clock: epoch seconds.
    """

    def __init__(self, client: Any, table: str, *, clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._table = table
        self._clock = clock

    def current(self) -> ConfigVersion | None:
        """The version in effect, or None when none was ever pushed (the template parameters rule)."""
        item = self._client.get_item(TableName=self._table, Key={"job_id": {"S": CURRENT_ROW}}, ConsistentRead=True)
        value = item.get("Item", {}).get(VALUE_ATTR, {}).get("S")
        return ConfigVersion.from_json(value) if value else None

    def get(self, number: int) -> ConfigVersion:
        # Consistent: a version pushed a second ago (then reprocessed with) must be found at once.
        item = self._client.get_item(
            TableName=self._table, Key={"job_id": {"S": version_row(number)}}, ConsistentRead=True
        )
        value = item.get("Item", {}).get(VALUE_ATTR, {}).get("S")
        if not value:
            raise ConfigError(f"configuration version v{number} does not exist (see `vlmwatch config history`)")
        return ConfigVersion.from_json(value)

    def history(self, limit: int = 20) -> list[ConfigVersion]:
        """The newest ``limit`` versions, newest first: one BatchGetItem of numbered rows, never a scan."""
        current = self.current()
        if current is None:
            return []
        numbers = list(range(current.number, max(0, current.number - limit), -1))
        found: dict[int, ConfigVersion] = {}
        keys: list[dict[str, Any]] = [{"job_id": {"S": version_row(n)}} for n in numbers]
        while keys:
            response = self._client.batch_get_item(
                RequestItems={self._table: {"Keys": keys[:100], "ProjectionExpression": VALUE_ATTR}}
            )
            for item in response["Responses"].get(self._table, []):
                version = ConfigVersion.from_json(item[VALUE_ATTR]["S"])
                found[version.number] = version
            keys = keys[100:] + response.get("UnprocessedKeys", {}).get(self._table, {}).get("Keys", [])
        return [found[n] for n in numbers if n in found]

    def push(self, config: PipelineConfig, *, note: str = "", expect: int | None = None) -> ConfigVersion:
        """Store ``config`` (already validated: it is a ``PipelineConfig``) as the next version and make it
        current, atomically.

        Args:
            expect: the version the caller validated against (default: the one current now).

        Raises:
            ConfigConflictError: another push won in between; nothing was written.
        """
        if expect is None:
            current = self.current()
            expect = current.number if current else 0
        version = ConfigVersion(number=expect + 1, config=config, pushed_at=int(self._clock()), note=note[:200])
        body = version.to_json()
        pointer: dict[str, Any] = {
            "Put": {
                "TableName": self._table,
                "Item": {
                    "job_id": {"S": CURRENT_ROW},
                    "current_version": {"N": str(version.number)},
                    VALUE_ATTR: {"S": body},
                },
                "ConditionExpression": "attribute_not_exists(job_id) OR current_version = :expect"
                if expect
                else "attribute_not_exists(job_id)",
            }
        }
        if expect:
            pointer["Put"]["ExpressionAttributeValues"] = {":expect": {"N": str(expect)}}
        history = {
            "Put": {
                "TableName": self._table,
                "Item": {"job_id": {"S": version_row(version.number)}, VALUE_ATTR: {"S": body}},
                "ConditionExpression": "attribute_not_exists(job_id)",
            }
        }
        try:
            self._client.transact_write_items(TransactItems=[history, pointer])
        except ClientError as exc:
            if error_code(exc) == "TransactionCanceledException":
                raise ConfigConflictError(
                    f"configuration changed while this push was prepared (expected v{expect} to be current): "
                    "nothing was written; look at `vlmwatch config history` and push again"
                ) from exc
            raise
        logger.info("configuration pushed", extra={"config_version": version.number, "digest": config.digest})
        return version

    def rollback(self, number: int) -> ConfigVersion:
        """Make an earlier version current again, as a new version (history only grows)."""
        old = self.get(number)
        return self.push(old.config, note=f"rollback to v{number}")


def job_table_provider(client: Any, table: str) -> Any:
    """A powertools Parameters provider over rows of the job table, with the functions' own low-level client.

    powertools' ``DynamoDBProvider`` wants a boto3 *resource*, and importing boto3 costs ~180 ms of cold start
    the functions otherwise avoid (they use botocore); this provider keeps powertools' cache and max age and
    reads with the client the process already has. Built on first use (the import stays out of cold start).
    """
    from aws_lambda_powertools.utilities.parameters.base import BaseProvider

    class JobTableProvider(BaseProvider):
        def _get(self, name: str, **_options: Any) -> str:
            response = client.get_item(TableName=table, Key={"job_id": {"S": name}})
            return str(response["Item"][VALUE_ATTR]["S"])  # KeyError: no such row (nothing pushed)

        def _get_multiple(self, path: str, **_options: Any) -> dict[str, str]:
            raise NotImplementedError("configuration is read one row at a time")

    return JobTableProvider(client=client)


class ConfigSource:
    """The functions' view: the configuration in effect, re-read at most every ``max_age`` seconds.

    Reads go through a powertools Parameters provider (:func:`job_table_provider`, with its cache and max
    age); the age is also kept on ``clock`` here, so virtual time (tests, benchmarks) ages it too. No row
    means no push yet: ``fallback`` (version 0, the template parameters) rules, and that answer is cached
    as well, so an unconfigured deployment pays one GetItem per ``max_age``, not per file. A row that does
    not validate (written by hand, not by ``push``) is logged and the last good version stays in effect.

    Args:
        client: a low-level DynamoDB client.
        table: the job table.
        fallback: version 0, from the deployment's parameters.
        max_age: seconds a read is trusted.
        clock: seconds (the runtime's clock).
    """

    def __init__(
        self,
        client: Any,
        table: str,
        fallback: ConfigVersion,
        *,
        max_age: int = 60,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._table = table
        self._fallback = fallback
        self._max_age = max_age
        self._clock = clock
        self._provider: Any = None
        self._current: ConfigVersion | None = None
        self._good: ConfigVersion | None = None
        self._read_at = float("-inf")
        self._versions: dict[int, ConfigVersion] = {}

    def clear_cache(self) -> None:
        self._read_at = float("-inf")

    def _read(self) -> str | None:
        from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

        if self._provider is None:
            self._provider = job_table_provider(self._client, self._table)
        try:
            # Our own clock said the last read is too old: powertools' cache (on the wall clock) must not
            # answer for it.
            return str(self._provider.get(CURRENT_ROW, max_age=self._max_age, force_fetch=True))
        except GetParameterError as exc:
            if isinstance(exc.__context__, KeyError):  # no such row: nothing was ever pushed
                return None
            raise

    def version(self, number: int) -> ConfigVersion:
        """A named version (a reprocess asked for it); 0 is the template parameters. Versions never change
        once written, so each is read once per process.

        Raises:
            ConfigError: no such version (the reprocess message names one that was never pushed).
        """
        if number == 0:
            return self._fallback
        if number not in self._versions:
            self._versions[number] = ConfigStore(self._client, self._table).get(number)
        return self._versions[number]

    def current(self) -> ConfigVersion:
        now = self._clock()
        if self._current is not None and now - self._read_at < self._max_age:
            return self._current
        try:
            text = self._read()
        except Exception:
            if self._good is None:
                raise
            logger.exception("configuration unreadable; keeping %s", self._good.label)
            return self._good
        self._read_at = now
        if text is not None and (self._good is None or self._good.to_json() != text):
            try:
                self._good = ConfigVersion.from_json(text)
            except Exception as exc:
                if self._good is None:
                    # Nothing good to keep: routing with the template's v0 instead would be silently wrong.
                    raise ConfigError(f"the configuration in effect does not validate: {exc}") from exc
                logger.exception("stored configuration does not validate; keeping %s", self._good.label)
        self._current = self._good or self._fallback
        return self._current
