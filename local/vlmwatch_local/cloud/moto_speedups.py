"""Two hot spots of moto 5.2 that made the local stack slow, fixed where moto runs (in-process or its server).

Profiled on the 1,000-file bench (see docs/PERFORMANCE.md, "local throughput"):

* **SQS send and receive were quadratic.** ``ReceiveMessage`` checks each message's retention period
  through ``get_queue_attributes``, which recomputes every attribute of the queue (message counts
  included, three passes over all its messages) three times per message: 10 messages from a queue of
  1,000 took ~0.5 s. Here the retention period is read from the queue itself. ``SendMessage`` (and so
  every S3 event EventBridge puts on the ingest queue) builds the same attributes to read one flag,
  ``ContentBasedDeduplication``: dropping 1,000 files took 31 s, growing with the queue. Here the three
  message counts are not counted while a message is being sent (nothing on that path reads them).
* **Item-heavy DynamoDB responses went through moto's generic serializer**, which walks the output shape
  member by member (every ``AttributeValue`` tries its ten type members): ~12 ms per item in a ``Scan``,
  4 s for a 1,000-record stream ``GetRecords``, 20 ms per ``UpdateItem``. The items moto returns are
  already in the wire format (``{"S": ...}``), so for the operations that return items the body is
  ``json.dumps`` of the result, with what the serializer would convert converted the same way (bytes to
  base64, datetimes to epoch seconds, ``None`` members left out). Anything else (errors, table
  descriptions, an unexpected type) takes moto's own path. ``tests/integration/test_moto_speedups.py``
  checks the two give the same bodies.
* **Every UpdateItem parsed its expression twice and walked its syntax tree ten times** through a generic
  recursive visitor (~60 % of an UpdateItem's 19 ms). Here a parsed expression is kept by its text (moto
  deep-copies it before validating, so the kept tree is never changed), that deep copy is made node by
  node (a tree of nodes over strings), the visitor looks up what it processes once per walk instead
  of once per node, and the check that an expression has one SET/REMOVE/ADD clause at most counts each
  node's clauses once instead of searching the subtree again at every node (quadratic in the clauses).
* **Every in-process request rebuilt its service's URL table** (S3's by reloading its ``urls`` module)
  and listed its response class's methods with ``inspect.getmembers``: ~12 % of moto's time. Here each
  backend class's table is built once (per value of the two settings that change it), each class's
  method names listed once.

:func:`install` is idempotent; :func:`uninstall` puts moto back (tests).
"""

from __future__ import annotations

import base64
import calendar
import copy
import datetime as dt
import functools
import json
import os
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

# The operations whose results are items (or stream records): the ones worth a fast path.
FAST_OPERATIONS = {
    "dynamodb": frozenset(
        {
            "GetItem",
            "PutItem",
            "UpdateItem",
            "DeleteItem",
            "Query",
            "Scan",
            "BatchGetItem",
            "BatchWriteItem",
            "TransactGetItems",
            "TransactWriteItems",
        }
    ),
    "dynamodbstreams": frozenset({"GetRecords"}),
}
_CONTENT_TYPE = {"dynamodb": "application/x-amz-json-1.0", "dynamodbstreams": "application/x-amz-json-1.0"}
_originals: dict[str, Callable[..., Any]] = {}


class _NotPlain(Exception):
    """A value the fast path does not know how to write: moto's serializer does it."""


def plain(value: Any) -> Any:
    """``value`` as the JSON serializer would write it, or :class:`_NotPlain`."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dt.datetime):
        return _epoch(value)
    if isinstance(value, Decimal):
        return float(value)
    raise _NotPlain(type(value).__name__)


def _epoch(value: dt.datetime) -> float | int:
    # As moto's serializer writes a timestamp: whole seconds of the (UTC) wall time, milliseconds truncated.
    seconds = calendar.timegm(value.timetuple())
    return seconds + (value.microsecond // 1000) / 1000.0 if value.microsecond else seconds


def fast_body(service: str, operation: str, result: Any) -> str | None:
    """The response body for this operation's ``result``, or None when moto's serializer must write it."""
    if operation not in FAST_OPERATIONS.get(service, ()) or not isinstance(result, dict):
        return None
    members = _output_members(service, operation)
    try:
        return json.dumps(plain({k: v for k, v in result.items() if k in members}), separators=(",", ":"))
    except _NotPlain:
        return None


@functools.cache
def _output_members(service: str, operation: str) -> frozenset[str]:
    """What the operation's output shape declares (moto adds a few more; its serializer leaves them out)."""
    from moto.core.utils import get_service_model

    shape = get_service_model(service).operation_model(operation).output_shape
    return frozenset(shape.members) if shape is not None else frozenset()


def install() -> None:
    """Patch moto in this process (before or after its backends are used)."""
    if _originals:
        return
    from moto.core.responses import ActionResult, BaseResponse
    from moto.sqs.models import SQSBackend, unix_time

    def serialized(self: Any, action_result: ActionResult) -> Any:
        service = getattr(self, "boto3_service_name", "") or getattr(self, "service_name", "")
        if service in FAST_OPERATIONS and type(action_result).__name__ in ("ActionResult", "DynamoResult"):
            body = fast_body(service, self._get_action(), action_result.result)
            if body is not None:
                headers = {"Content-Type": _CONTENT_TYPE[service], **self.response_headers}
                return 200, headers, body
        return _originals["serialized"](self, action_result)

    def retained(self: Any, queue_name: str, message: Any) -> bool:
        queue = self.get_queue(queue_name)
        return int(queue.message_retention_period) + message.sent_timestamp / 1000 > unix_time()

    _install_expression_speedups()
    _install_cached_urls()
    send = SQSBackend.send_message

    def send_message(self: Any, *args: Any, **kwargs: Any) -> Any:
        before = getattr(_sending, "active", False)
        _sending.active = True
        try:
            return send(self, *args, **kwargs)
        finally:
            _sending.active = before

    _originals["serialized"] = BaseResponse.serialized
    _originals["retained"] = SQSBackend.is_message_valid_based_on_retention_period
    _originals["send_message"] = send
    BaseResponse.serialized = serialized  # type: ignore[method-assign]
    SQSBackend.is_message_valid_based_on_retention_period = retained  # type: ignore[method-assign]
    SQSBackend.send_message = send_message  # type: ignore[method-assign]
    _install_uncounted_while_sending()


def _install_cached_urls() -> None:
    from moto.core import responses
    from moto.core.base_backend import BaseBackend

    _originals["method_names_from_class"] = responses.method_names_from_class
    responses.method_names_from_class = functools.cache(responses.method_names_from_class)

    built = BaseBackend.__dict__["urls"]
    kept: dict[tuple[Any, ...], Any] = {}

    def urls(self: Any) -> Any:
        key = (type(self), os.environ.get("MOTO_S3_CUSTOM_ENDPOINTS"), os.environ.get("MOTO_ENABLE_ISO_REGIONS"))
        got = kept.get(key)
        if got is None:
            got = kept[key] = built.fget(self)
        return got

    _originals["BaseBackend.urls"] = built
    BaseBackend.urls = property(urls)  # type: ignore[method-assign,assignment]


_COUNTS = (
    "approximate_number_of_messages",
    "approximate_number_of_messages_delayed",
    "approximate_number_of_messages_not_visible",
)
_sending = threading.local()


def _install_uncounted_while_sending() -> None:
    from moto.sqs.models import Queue

    for name in _COUNTS:
        counted = Queue.__dict__[name]
        _originals[f"Queue.{name}"] = counted

        def count(self: Any, _counted: Any = counted) -> Any:
            return 0 if getattr(_sending, "active", False) else _counted.fget(self)

        setattr(Queue, name, property(count))


def _install_expression_speedups() -> None:
    from moto.dynamodb.exceptions import TooManyClauses
    from moto.dynamodb.parsing import ast_nodes, validators
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser

    make = UpdateExpressionParser.make.__func__  # type: ignore[attr-defined]
    parsed: dict[str, Any] = {}

    def cached_make(cls: Any, expression: str) -> Any:
        if cls is not UpdateExpressionParser:
            return make(cls, expression)
        tree = parsed.get(expression)
        if tree is None:
            tree = parsed[expression] = make(cls, expression)
            if len(parsed) > 4096:
                parsed.pop(next(iter(parsed)))
        return tree

    base = ast_nodes.DepthFirstTraverser

    def traverse(self: Any, node: Any) -> Any:
        # The same walk as DepthFirstTraverser.traverse_node_recursively, with its per-node lookups hoisted.
        node_type = ast_nodes.Node
        handlers = list(self._processing_map().items())
        kinds = self.nodes_to_be_processed()
        pre = (
            None if type(self).pre_processing_of_child is base.pre_processing_of_child else self.pre_processing_of_child
        )

        # What a node of each type gets: not walked (a leaf), walked, or walked and handled. Looked up once
        # per type and walk: isinstance against the processors' ABCs was a third of an UpdateItem.
        plans: dict[type, tuple[bool, Any]] = {}

        def plan(kind: type) -> tuple[bool, Any]:
            got = plans.get(kind)
            if got is None:
                handler = None
                if issubclass(kind, kinds):
                    handler = next(h for k, h in handlers if issubclass(kind, k))
                got = plans[kind] = (issubclass(kind, node_type), handler)
            return got

        def walk(node: Any, child_id: int) -> Any:
            is_node, handler = plan(type(node))
            if is_node:
                parent = node.parent
                children = node.children
                if children is not None:
                    for i, child in enumerate(children):
                        if pre is not None:
                            pre(node, i)
                        walk(child, i)
                if handler is not None:
                    node = handler(node)
                    node.parent = parent
                    if parent:
                        parent.children[child_id] = node
            return node

        return walk(node, -1)

    def copy_tree(value: Any, memo: Any = None) -> Any:
        # A syntax tree is nodes (type, children, parent) over str/int leaves: copied node by node, it is
        # what copy.deepcopy makes of it at a tenth of the cost. Anything else still goes to deepcopy.
        if not isinstance(value, ast_nodes.Node) or value.parent is not None:
            return copy.deepcopy(value, memo)

        def clone(node: Any, parent: Any) -> Any:
            new = object.__new__(type(node))
            new.__dict__.update(node.__dict__)
            new.parent = parent
            if node.children is not None:
                new.children = [
                    clone(child, new)
                    if isinstance(child, ast_nodes.Node)
                    else child
                    if isinstance(child, str | int)
                    else copy.deepcopy(child)
                    for child in node.children
                ]
            return new

        return clone(value, None)

    kinds = (
        ("ADD", ast_nodes.UpdateExpressionAddClause),
        ("REMOVE", ast_nodes.UpdateExpressionRemoveClause),
        ("SET", ast_nodes.UpdateExpressionSetClause),
    )

    def verify_action_counts(self: Any, node: Any) -> Any:
        # What ActionCountValidator checks (each UpdateExpression node holds at most one ADD, REMOVE and SET
        # clause, as Node.find_clauses counts them, checked in that order, bottom-up), with each node's counts
        # kept for its parents: the original searched the whole subtree again at every node.
        memo: dict[int, tuple[int, ...]] = self.__dict__.setdefault("_clause_counts", {})

        def count(node: Any) -> tuple[int, ...]:
            got = memo.get(id(node))
            if got is None:
                totals = [0, 0, 0]
                for child in node.children or []:
                    below = (
                        count(child)
                        if isinstance(child, ast_nodes.Expression | ast_nodes.UpdateExpressionFunction)
                        else None
                    )
                    for i, (_, kind) in enumerate(kinds):
                        if type(child) is kind:
                            totals[i] += 1
                        elif below is not None:
                            totals[i] += below[i]
                got = memo[id(node)] = tuple(totals)
            return got

        for (name, _), n in zip(kinds, count(node), strict=True):
            if n > 1:
                raise TooManyClauses(name)
        return node

    _originals["make"] = UpdateExpressionParser.__dict__["make"]
    _originals["verify_action_counts"] = validators.ActionCountValidator.verify_action_counts
    validators.ActionCountValidator.verify_action_counts = verify_action_counts  # type: ignore[method-assign]
    _originals["traverse"] = base.traverse
    _originals["validators.deepcopy"] = validators.deepcopy
    UpdateExpressionParser.make = classmethod(cached_make)  # type: ignore[method-assign,assignment]
    base.traverse = traverse  # type: ignore[method-assign]
    validators.deepcopy = copy_tree


def uninstall() -> None:
    if not _originals:
        return
    from moto.core import responses
    from moto.core.base_backend import BaseBackend
    from moto.core.responses import BaseResponse
    from moto.dynamodb.parsing import ast_nodes, validators
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser
    from moto.sqs.models import Queue, SQSBackend

    BaseBackend.urls = _originals.pop("BaseBackend.urls")  # type: ignore[method-assign]
    responses.method_names_from_class = _originals.pop("method_names_from_class")
    validators.deepcopy = _originals.pop("validators.deepcopy")
    validators.ActionCountValidator.verify_action_counts = _originals.pop("verify_action_counts")  # type: ignore[method-assign]
    for name in _COUNTS:
        setattr(Queue, name, _originals.pop(f"Queue.{name}"))
    SQSBackend.send_message = _originals.pop("send_message")  # type: ignore[method-assign]
    UpdateExpressionParser.make = _originals.pop("make")  # type: ignore[method-assign]
    ast_nodes.DepthFirstTraverser.traverse = _originals.pop("traverse")  # type: ignore[method-assign]
    BaseResponse.serialized = _originals.pop("serialized")  # type: ignore[method-assign]
    SQSBackend.is_message_valid_based_on_retention_period = _originals.pop("retained")  # type: ignore[method-assign]
