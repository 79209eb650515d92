"""DynamoDB's attribute-value JSON, both ways, without importing boto3.

``import boto3`` (even for ``boto3.dynamodb.types``) loads boto3's session and s3transfer: about 180 ms of
every cold start for two small functions. These follow boto3's ``TypeSerializer`` / ``TypeDeserializer``
for the types vlmwatch stores: numbers come back as ``Decimal``, floats are refused (store a ``Decimal``),
sets are not used.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any


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
