"""The library's layers, and the one definition of each concept the rest of the stack is checked against."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import yaml

from vlmwatch.core.lifecycle import ALLOWED_FROM, FINISHED, IN_FLIGHT, SETTLED, Status, can_move

PACKAGE = Path(__file__).resolve().parents[2] / "layers" / "vlmwatch" / "vlmwatch"
LAYERS = ("core", "adapters", "flows", "runtime")
# What each layer may import from the package (the arrows point one way: runtime → flows → adapters → core).
MAY_IMPORT = {
    "core": {"core"},
    "adapters": {"core", "adapters"},
    "flows": {"core", "adapters", "flows"},
    "runtime": set(LAYERS),
}
# Third-party I/O libraries only adapters (and the wiring that builds them) may touch.
IO_LIBRARIES = {"boto3", "botocore", "httpx", "aws_lambda_powertools"}


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at any depth (inside functions and TYPE_CHECKING blocks too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def modules(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", LAYERS)
def test_each_layer_imports_only_the_layers_below_it(layer):
    wrong = []
    for path in modules(layer):
        for name in imports_of(path):
            parts = name.split(".")
            if parts[0] == "vlmwatch" and len(parts) > 1 and parts[1] in LAYERS and parts[1] not in MAY_IMPORT[layer]:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_core_is_pure_no_aws_and_no_http():
    wrong = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in modules("core")
        for name in imports_of(path)
        if name.split(".")[0] in IO_LIBRARIES
    ]
    assert not wrong, "\n".join(wrong)


def test_every_module_lives_in_a_layer():
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert loose == []


def test_no_class_holds_several_concerns():
    """A class over ~200 lines is a sign it does more than one job (split it; see docs/ARCHITECTURE.md)."""
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 220:
                long.append(f"{path.relative_to(PACKAGE)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, "\n".join(long)


# -- the lifecycle, defined once -------------------------------------------------------------------

PIPELINE_ORDER = [
    [Status.RECEIVED],
    [Status.SUBMITTED],
    [Status.ENQUEUED, Status.PENDING],
    [Status.RUNNING, Status.PAUSED],
    [Status.COMPLETED, Status.FAILED, Status.TIMED_OUT],
    [Status.DELIVERED, Status.SKIPPED],
]
STAGE = {status: i for i, stage in enumerate(PIPELINE_ORDER) for status in stage}


def test_no_status_ever_moves_backwards():
    for target, sources in ALLOWED_FROM.items():
        for source in sources:
            assert STAGE[source] <= STAGE[target], f"{source} -> {target} moves backwards"


def test_a_finished_outcome_is_decided_once_and_settled_jobs_never_move():
    for outcome in FINISHED:
        assert not any(can_move(outcome, other) for other in FINISHED)
    for settled in SETTLED:
        assert not any(can_move(settled, target) for target in Status)


def test_the_three_sets_do_not_overlap_and_cover_every_status_but_received():
    assert not (IN_FLIGHT & FINISHED) and not (FINISHED & SETTLED) and not (IN_FLIGHT & SETTLED)
    assert IN_FLIGHT | FINISHED | SETTLED | {Status.RECEIVED} == set(Status)


def test_the_template_stream_filter_is_the_finished_set():
    """CompleteFunction fires on transitions into FINISHED: the template spells the set, checked here."""

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    template = yaml.load((PACKAGE.parents[2] / "template.yaml").read_text(), Loader=Loader)  # noqa: S506
    (pattern,) = [
        json.loads(f["Pattern"])
        for f in template["Resources"]["CompleteFunction"]["Properties"]["Events"]["JobStream"]["Properties"][
            "FilterCriteria"
        ]["Filters"]
    ]
    new = pattern["dynamodb"]["NewImage"]["status"]["S"]
    old = pattern["dynamodb"]["OldImage"]["status"]["S"][0]["anything-but"]
    assert set(new) == set(old) == {s.value for s in FINISHED}
