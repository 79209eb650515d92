"""DynamoDB's attribute-value JSON, both ways, without importing boto3; and :class:`Update`, which builds
conditional update expressions.

``import boto3`` (even for ``boto3.dynamodb.types``) loads boto3's session and s3transfer: about 180 ms of
every cold start for two small functions. These follow boto3's ``TypeSerializer`` / ``TypeDeserializer``
for the types vlmwatch stores: numbers come back as ``Decimal``, floats are refused (store a ``Decimal``),
sets are not used.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

_PLACEHOLDER = re.compile(r"[#:][A-Za-z0-9_]+")


def serialize(value: Any) -> dict[str, Any]:
    """A Python value as a DynamoDB attribute value (``{"S": ...}``, ``{"N": ...}``, ...)."""
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, int | Decimal):
        return {"N": str(value)}
    if isinstance(value, float):
        raise TypeError("Float types are not supported. Use Decimal types instead.")
    if isinstance(value, bytes | bytearray):
        return {"B": bytes(value)}
    if isinstance(value, dict):
        return {"M": {str(k): serialize(v) for k, v in value.items()}}
    if isinstance(value, list | tuple):
        return {"L": [serialize(v) for v in value]}
    raise TypeError(f"unsupported type for DynamoDB: {type(value).__name__}")


def deserialize(value: dict[str, Any]) -> Any:
    """A DynamoDB attribute value as a Python value (numbers as ``Decimal``)."""
    ((kind, data),) = value.items()
    if kind == "S":
        return data
    if kind == "N":
        return Decimal(data)
    if kind == "BOOL":
        return bool(data)
    if kind == "NULL":
        return None
    if kind == "M":
        return {k: deserialize(v) for k, v in data.items()}
    if kind == "L":
        return [deserialize(v) for v in data]
    if kind == "B":
        return data
    if kind == "SS":
        return set(data)
    if kind == "NS":
        return {Decimal(n) for n in data}
    raise TypeError(f"unsupported DynamoDB type {kind!r}")


def serialize_item(values: dict[str, Any]) -> dict[str, Any]:
    return {k: serialize(v) for k, v in values.items()}


def deserialize_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: deserialize(v) for k, v in item.items()}


class Update:
    """One conditional ``UpdateItem`` built from parts; every name and value goes through a placeholder.

    Placeholders, not raw names: some attribute names (``status``, ``error``) are reserved words, and a
    hand-written expression is where a missing ``:value`` hides. Conditions are ANDed, with
    ``attribute_exists`` of the key unless ``create`` (so an update never creates a row by accident).
    """

    def __init__(self, key_name: str, *, create: bool = False) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}
        self._key = key_name
        self._sets: dict[str, str] = {}
        self._removes: list[str] = []
        self._conditions: list[str] = [] if create else [f"attribute_exists({self._name(key_name)})"]

    def _name(self, field: str) -> str:
        placeholder = f"#{field}"
        self.names[placeholder] = field
        return placeholder

    def _value(self, value: Any) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = value
        return placeholder

    # -- what changes ------------------------------------------------------------------------------

    def set(self, field: str, value: Any) -> Update:
        self._sets[field] = f"{self._name(field)} = {self._value(value)}"
        return self

    def set_all(self, fields: dict[str, Any]) -> Update:
        for field, value in fields.items():
            self.set(field, value)
        return self

    def increment(self, field: str, by: int | Decimal = 1) -> Update:
        name = self._name(field)
        self._sets[field] = f"{name} = if_not_exists({name}, {self._value(0)}) + {self._value(by)}"
        return self

    def append(self, field: str, items: list[Any]) -> Update:
        name = self._name(field)
        self._sets[field] = f"{name} = list_append(if_not_exists({name}, {self._value([])}), {self._value(items)})"
        return self

    def set_clause(self, field: str) -> str | None:
        """The ``#field = ...`` clause this update sets, if any."""
        return self._sets.get(field)

    def remove(self, *fields: str) -> Update:
        self._removes.extend(f for f in fields if f not in self._removes)
        return self

    # -- when it may change ------------------------------------------------------------------------

    def when(self, condition: str) -> Update:
        """A raw condition, built with :meth:`ref` and :meth:`val`."""
        self._conditions.append(condition)
        return self

    def ref(self, field: str) -> str:
        return self._name(field)

    def val(self, value: Any) -> str:
        return self._value(value)

    def when_in(self, field: str, allowed: list[Any]) -> Update:
        return self.when(f"{self._name(field)} IN ({', '.join(self._value(v) for v in allowed)})")

    def when_not_in(self, field: str, excluded: list[Any]) -> Update:
        return self.when(f"NOT {self._name(field)} IN ({', '.join(self._value(v) for v in excluded)})")

    def when_absent_or_equals(self, field: str, value: Any) -> Update:
        name = self._name(field)
        return self.when(f"attribute_not_exists({name}) OR {name} = {self._value(value)}")

    def when_absent_or_below(self, field: str, limit: Any) -> Update:
        name = self._name(field)
        return self.when(f"attribute_not_exists({name}) OR {name} < {self._value(limit)}")

    def when_equals(self, field: str, value: Any) -> Update:
        return self.when(f"{self._name(field)} = {self._value(value)}")

    def when_absent(self, field: str) -> Update:
        return self.when(f"attribute_not_exists({self._name(field)})")

    def when_present(self, field: str) -> Update:
        return self.when(f"attribute_exists({self._name(field)})")

    def when_not_listed(self, field: str, item: Any) -> Update:
        return self.when(f"NOT contains({self._name(field)}, {self._value(item)})")

    def request(self, table: str, key: Any) -> dict[str, Any]:
        """The ``UpdateItem`` arguments (for a key value of ``key``)."""
        removes = [f for f in self._removes if f not in self._sets]
        expr = ""
        if self._sets:
            expr = "SET " + ", ".join(self._sets.values())
        if removes:
            expr += (" " if expr else "") + "REMOVE " + ", ".join(self._name(f) for f in removes)
        condition = " AND ".join(f"({c})" for c in self._conditions)
        # A field set twice leaves its first value unreferenced, which DynamoDB refuses: send only what is used.
        used = set(_PLACEHOLDER.findall(f"{expr} {condition}"))
        kwargs: dict[str, Any] = {
            "TableName": table,
            "Key": serialize_item({self._key: key}),
            "UpdateExpression": expr,
            "ExpressionAttributeNames": {k: v for k, v in self.names.items() if k in used},
        }
        if condition:
            kwargs["ConditionExpression"] = condition
        values = {k: v for k, v in self.values.items() if k in used}
        if values:
            kwargs["ExpressionAttributeValues"] = serialize_item(values)
        return kwargs


def conditional_update(
    client: Any, table: str, key: str, update: Update, **options: Any
) -> tuple[bool, dict[str, Any]]:
    """Apply ``update`` to the row ``key``: (True, the attributes asked for with ``ReturnValues``), or, when
    its condition lost, (False, the row as it is now if asked with ``ReturnValuesOnConditionCheckFailure``).

    A lost condition is a race decided, not a fault; any other error is raised.
    """
    from botocore.exceptions import ClientError

    from vlmwatch.adapters.aws_errors import AwsErrorKind, classify

    try:
        response = client.update_item(**update.request(table, key), **options)
    except ClientError as exc:
        if classify(exc) == AwsErrorKind.CONDITION_FAILED:
            item: dict[str, Any] = exc.response.get("Item") or {}  # type: ignore[assignment]
            return False, deserialize_item(item)
        raise
    return True, deserialize_item(response.get("Attributes", {}))
