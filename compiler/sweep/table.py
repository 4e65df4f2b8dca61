"""The results table: one row per point (every option, every figure of the plan/run JSON), as Parquet and CSV."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from compiler.sweep.points import Point
from compiler.sweep.store import write_bytes, write_text

PARQUET, CSV = "table.parquet", "table.csv"
# Columns that hold text even when every value is missing (all points planned: no error).
_TEXT_COLUMNS = ("key", "model", "target", "machine", "status", "error")
# The plan's `options` are the option columns already.
_SKIPPED = ("plan.options",)


def rows(points: list[Point], records: dict[str, dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
    """One row per point, in point order: the point's inputs, its status and error, then the plan's
    figures as `plan.<dotted key>` and the run's as `run.<dotted key>` (lists as JSON text)."""
    return [_row(p, records[k], k) for p, k in zip(points, keys, strict=True)]


def _row(point: Point, record: dict[str, Any], key: str) -> dict[str, Any]:
    row: dict[str, Any] = {"point": point.index, "key": key, "model": point.model.label,
                           "target": point.target.label, "machine": point.machine}
    row |= {f"target.{name}": value for name, value in point.fields}
    row |= dict(point.options)
    row["run"] = point.run
    if point.run == "compile+run":
        row["tokens"] = point.tokens
    row |= {"status": record["status"], "error": record["error"]}
    for section in ("plan", "run"):
        if record.get(section) is not None:
            row |= _flatten(record[section], f"{section}.")
    return row


def _flatten(value: dict[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = prefix + key
        if name in _SKIPPED:
            continue
        if isinstance(item, dict):
            out |= _flatten(item, name + ".")
        else:
            out[name] = json.dumps(item, sort_keys=True, separators=(",", ":")) if isinstance(item, list) else item
    return out


def columns(table: list[dict[str, Any]]) -> list[str]:
    """Every column, in order of first appearance (inputs first, then figures as the JSON orders them)."""
    seen: dict[str, None] = {}
    for row in table:
        seen |= dict.fromkeys(row)
    return list(seen)


def write_tables(table: list[dict[str, Any]], out: Path) -> list[Path]:
    """`table.parquet` and `table.csv` in `out`, each written atomically; the same rows give the same bytes."""
    names = columns(table)
    write_bytes(out / PARQUET, parquet_bytes(table, names))
    write_text(out / CSV, csv_text(table, names))
    return [out / PARQUET, out / CSV]


def parquet_bytes(table: list[dict[str, Any]], names: list[str]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = [_array([row.get(n) for row in table], n in _TEXT_COLUMNS) for n in names]
    data = pa.table(arrays, names=names)
    sink = pa.BufferOutputStream()
    # Every writer option pinned, so the bytes depend on the rows alone (and pyarrow's version,
    # which `created_by` records); no timestamps are written.
    pq.write_table(data, sink, version="2.6", compression="zstd", compression_level=3, use_dictionary=True,
                   write_statistics=True, data_page_version="1.0", store_schema=True)
    return sink.getvalue().to_pybytes()


def _array(values: list[Any], text: bool):
    """A typed column: bool, int64, float64 (ints and floats mixed) or string; anything else as JSON text."""
    import pyarrow as pa

    present = [v for v in values if v is not None]
    if text or any(isinstance(v, str) for v in present):
        return pa.array([_text(v) for v in values], pa.string())
    if present and all(isinstance(v, bool) for v in present):
        return pa.array(values, pa.bool_())
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.array(values, pa.int64())
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    return pa.array([_text(v) for v in values], pa.string())


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def csv_text(table: list[dict[str, Any]], names: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(names)
    for row in table:
        writer.writerow([_cell(row.get(n)) for n in names])
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else repr(value)
