"""`vlmwatch query "SQL"`: the results index, queried locally with DuckDB (the optional ``query`` extra).

The same SQL Athena runs over the Glue table ``results`` runs here over a local copy of the index: the
records are JSON Lines under ``dt=YYYY-MM-DD/`` folders (``vlmwatch.core.results_index``), read with
``read_json`` and hive partitioning, so ``dt`` is a column in both. The copy is kept in a cache folder
and only records that are new or changed (by ETag) are downloaded again. Athena's
``json_extract_scalar`` is defined as a macro, so queries over ``response_json`` read the same in both.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmwatch.core.results_index import COLUMNS, index_prefix

# Glue/Athena type -> DuckDB type, for the columns a record always carries.
_DUCK = {"string": "VARCHAR", "int": "INTEGER", "bigint": "BIGINT", "double": "DOUBLE"}


@dataclass(frozen=True)
class Synced:
    folder: Path
    records: int
    downloaded: int


def default_cache(bucket: str, prefix: str) -> Path:
    name = hashlib.sha256(f"{bucket}/{prefix}".encode()).hexdigest()[:16]
    return Path.home() / ".cache" / "vlmwatch" / "index" / name


def sync_index(s3: Any, bucket: str, output_prefix: str, folder: Path, *, since_day: str | None = None) -> Synced:
    """Bring the local copy of the index up to date: list the records (from ``since_day`` on, if given),
    download the new and changed ones, remove the local ones no longer listed."""
    root = index_prefix(output_prefix)
    start_after = f"{root}dt={since_day}" if since_day else ""
    folder.mkdir(parents=True, exist_ok=True)
    listed: set[Path] = set()
    downloaded = 0
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=root, StartAfter=start_after):
        for obj in page.get("Contents", []):
            relative = obj["Key"][len(root) :]
            if not relative.startswith("dt=") or not relative.endswith(".json") or ".." in relative:
                continue
            local = folder / relative
            listed.add(local)
            tag = local.with_suffix(".etag")
            if local.exists() and tag.exists() and tag.read_text() == obj["ETag"]:
                continue
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
            tag.write_text(obj["ETag"])
            downloaded += 1
    for stale in folder.glob("dt=*/*.json"):
        if stale not in listed and (since_day is None or stale.parent.name >= f"dt={since_day}"):
            stale.unlink()
            stale.with_suffix(".etag").unlink(missing_ok=True)
    return Synced(folder=folder, records=len(listed), downloaded=downloaded)


def run_query(sql: str, folder: Path) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run ``sql`` over the table ``results`` (the records under ``folder``); returns (columns, rows).

    Raises:
        ImportError: DuckDB is not installed (``pip install 'vlmwatch[query]'``).
        ValueError: the SQL does not run (DuckDB's message).
    """
    import duckdb

    con = duckdb.connect(":memory:")
    con.execute("CREATE MACRO json_extract_scalar(j, p) AS json_extract_string(j, p)")
    columns = ", ".join(f"'{name}': '{_DUCK[kind]}'" for name, kind in COLUMNS.items())
    if any(folder.glob("dt=*/*.json")):
        # A view cannot take parameters: the glob is written into it (our own cache folder, quoted).
        pattern = str(folder / "dt=*" / "*.json").replace("'", "''")
        # Our cache path, quoted; the operator's own SQL runs next, on purpose.
        view = (
            f"CREATE VIEW results AS SELECT * FROM read_json('{pattern}', format='newline_delimited', "  # noqa: S608
            f"hive_partitioning=true, hive_types={{'dt': 'VARCHAR'}}, columns={{{columns}}})"
        )
        con.execute(view)
    else:  # an empty index is a table with no rows, not an error
        typed = ", ".join(f'CAST(NULL AS {_DUCK[kind]}) AS "{name}"' for name, kind in COLUMNS.items())
        con.execute(f"CREATE VIEW results AS SELECT {typed}, CAST(NULL AS VARCHAR) AS dt WHERE false")
    try:
        cursor = con.execute(sql)
    except duckdb.Error as exc:
        raise ValueError(f"query failed: {exc}") from exc
    names = [d[0] for d in cursor.description or []]
    return names, cursor.fetchall()


def rows_as_json(columns: list[str], rows: list[tuple[Any, ...]]) -> str:
    return json.dumps([dict(zip(columns, row, strict=True)) for row in rows], default=str, indent=2)
