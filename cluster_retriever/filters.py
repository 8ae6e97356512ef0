"""LlamaIndex ``MetadataFilters`` evaluated over metadata columns, with Chroma's semantics (so a
routed search filters exactly as ``ChromaVectorStore`` would; checked against Chroma's own
``where`` in tests/test_filters.py):

- ``==``, ``in``: the key must exist with a value of the same kind: numbers match numbers
  (``1 == 1.0``, integers compared exactly as integers: ``2**53 != 2**53 + 1``), strings
  strings, bools bools (``True`` is not ``1``);
- ``!=``, ``nin``: everything ``==`` / ``in`` does not match, documents without the key included;
- ``>``, ``>=``, ``<``, ``<=``: numbers only;
- ``and`` / ``or`` (and ``not``) nesting of any depth.

Filters Chroma refuses are refused here too, before anything is scanned, with a
``ValueError`` that says what to change: an empty nested group, NaN or infinite values, a
range on a string or bool, an empty or mixed ``in`` list.

A filter becomes a boolean mask over rows (``restrict``): over the inverted lists' columns
for the scan, and over the records fetched from Chroma for the hits, which is what makes a
stale column unable to leak a record.
"""

from __future__ import annotations

import json
import math
import numbers
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from llama_index.core.vector_stores.types import FilterCondition, FilterOperator, MetadataFilter, MetadataFilters

MISSING, BOOL, NUMBER, TEXT, OTHER = 0, 1, 2, 3, 4
_EXACT_FLOAT = 2**53  # integers up to this size are exact as float64
# Keys LlamaIndex writes for itself (the serialised node); every other key is filterable.
RESERVED_KEYS = frozenset({"_node_content", "_node_type"})


def kind_of(value: Any) -> int:
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, numbers.Number):
        return NUMBER
    if isinstance(value, str):
        return TEXT
    return OTHER


def _big_int(value: Any) -> bool:
    """An integer too large for float64 to hold exactly (compared as a Python int instead)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and abs(int(value)) > _EXACT_FLOAT


def filterable(metadata: dict[str, Any]) -> dict[str, Any]:
    """A record's metadata as filters see it: all but LlamaIndex's serialised node."""
    return {key: value for key, value in metadata.items() if key not in RESERVED_KEYS}


class Column:
    """One key's values over the rows: the values, their kinds, and the numbers as float64
    (``exact``: every integer fits a float64 exactly, so float comparisons are exact)."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values
        self.kinds = np.fromiter((kind_of(v) for v in values), dtype=np.int8, count=len(values))
        self.is_number = self.kinds == NUMBER
        self.floats = np.full(len(values), np.nan)
        numbers_ = values[self.is_number]
        self.floats[self.is_number] = numbers_.astype(np.float64)
        self.exact = not any(_big_int(v) for v in numbers_)


class MetadataColumns:
    """Per-key columns built lazily from one metadata dict per row."""

    def __init__(self, metadatas: np.ndarray | Sequence[dict[str, Any]]) -> None:
        if not isinstance(metadatas, np.ndarray):
            rows = np.empty(len(metadatas), dtype=object)
            rows[:] = list(metadatas)
            metadatas = rows
        self.metadatas = metadatas  # object array of dicts, aligned with the rows
        self._columns: dict[str, Column] = {}

    def __len__(self) -> int:
        return len(self.metadatas)

    def column(self, key: str) -> Column:
        if key not in self._columns:
            values = np.empty(len(self.metadatas), dtype=object)
            values[:] = [m.get(key) for m in self.metadatas]
            self._columns[key] = Column(values)
        return self._columns[key]


@dataclass(frozen=True)
class Restriction:
    """What a query may return: LlamaIndex ``MetadataFilters`` (Chroma's semantics), node ids
    and ref doc ids; all three apply together. Empty: nothing is restricted."""

    filters: MetadataFilters | None = None
    node_ids: tuple[str, ...] | None = None
    doc_ids: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("node_ids", "doc_ids"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise TypeError(f"{name} takes a list of ids, not the string {value[:40]!r}: pass [{value[:40]!r}].")
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        if self.filters is not None:
            check_filters(self.filters)  # a filter Chroma would refuse is refused here, once

    @classmethod
    def of(
        cls,
        filters: MetadataFilters | None = None,
        node_ids: Sequence[str] | None = None,
        doc_ids: Sequence[str] | None = None,
    ) -> Restriction:
        return cls(filters, tuple(node_ids) if node_ids else None, tuple(doc_ids) if doc_ids else None)

    @property
    def is_empty(self) -> bool:
        return not (self.filters is not None and self.filters.filters) and not self.node_ids and not self.doc_ids


NO_RESTRICTION = Restriction()


def restrict(columns: MetadataColumns, ids: np.ndarray, restriction: Restriction) -> np.ndarray:
    """The rows that pass the restriction's filters and ids (``doc_ids``: the rows' ``ref_doc_id``)."""
    filters, node_ids, doc_ids = restriction.filters, restriction.node_ids, restriction.doc_ids
    allowed = np.ones(len(columns), dtype=bool)
    if filters is not None and filters.filters:
        allowed &= evaluate(filters, columns)
    if node_ids:
        allowed &= np.isin(ids, np.asarray(list(node_ids), dtype=object))
    if doc_ids:
        allowed &= np.isin(columns.column("ref_doc_id").values, np.asarray(list(doc_ids), dtype=object))
    return allowed


def filter_key(restriction: Restriction) -> str:
    """A cache key for a restriction; values keep their type (``True`` and ``1`` are
    different filters, which pydantic's JSON dump would merge)."""
    node_ids, doc_ids = sorted(restriction.node_ids or []), sorted(restriction.doc_ids or [])
    return json.dumps([_canonical(restriction.filters), node_ids, doc_ids])


def _canonical(part: MetadataFilters | MetadataFilter | None) -> Any:
    if part is None:
        return None
    if isinstance(part, MetadataFilters):
        return [str(part.condition), [_canonical(p) for p in part.filters]]
    values = part.value if isinstance(part.value, list) else [part.value]
    return [part.key, str(part.operator), isinstance(part.value, list), [[type(v).__name__, repr(v)] for v in values]]


def check_filters(filters: MetadataFilters, nested: bool = False) -> None:
    """Refuse, as Chroma does, what it would refuse: empty nested groups, NaN or infinite
    values, ranges over strings or bools, empty or mixed ``in`` lists, unknown operators."""
    if nested and not filters.filters:
        raise ValueError(
            "A nested MetadataFilters group is empty; Chroma refuses it ('$and'/'$or' need expressions): "
            "remove the empty group or give it at least one filter."
        )
    if filters.condition not in (None, FilterCondition.AND, FilterCondition.OR, FilterCondition.NOT):
        raise ValueError(f"Filter condition {filters.condition!r} is not supported: use 'and', 'or' or 'not'.")
    for part in filters.filters:
        if isinstance(part, MetadataFilters):
            check_filters(part, nested=True)
        else:
            _check_leaf(part)


def _check_leaf(condition: MetadataFilter) -> None:
    op, value = condition.operator, condition.value
    values = value if isinstance(value, list) else [value]
    for v in values:
        if kind_of(v) not in (BOOL, NUMBER, TEXT):
            raise ValueError(f"Metadata filter value {v!r} of {condition.key!r} is not a string, number or bool.")
        if kind_of(v) == NUMBER and not math.isfinite(float(v)):  # type: ignore[arg-type]
            raise ValueError(f"Metadata filter value {v!r} of {condition.key!r} is not finite; Chroma refuses it.")
    if op in (FilterOperator.IN, FilterOperator.NIN):
        if not isinstance(value, list) or not value or len({kind_of(v) for v in value}) != 1:
            raise ValueError(f"'{op.value}' on {condition.key!r} takes a non-empty list of values of one type, not {value!r}.")
    elif op in _RANGES:
        if kind_of(value) != NUMBER:
            raise ValueError(f"Range filters (>, >=, <, <=) take a number, as in Chroma; got {value!r} for {condition.key!r}.")
    elif op not in (FilterOperator.EQ, FilterOperator.NE):
        raise ValueError(
            f"Filter operator {op.value!r} is not supported (ChromaVectorStore supports ==, !=, >, >=, <, <=, in, nin)."
        )
    elif isinstance(value, list):
        raise ValueError(f"'{op.value}' on {condition.key!r} takes one value, not a list: use 'in' or 'nin'.")


def evaluate(filters: MetadataFilters, columns: MetadataColumns) -> np.ndarray:
    """The rows whose metadata passes ``filters`` (checked first with ``check_filters``)."""
    check_filters(filters)
    return _evaluate(filters, columns)


def _evaluate(filters: MetadataFilters, columns: MetadataColumns) -> np.ndarray:
    parts = [_evaluate(part, columns) if isinstance(part, MetadataFilters) else _leaf(part, columns) for part in filters.filters]
    if not parts:
        return np.ones(len(columns), dtype=bool)
    condition = filters.condition or FilterCondition.AND
    if condition == FilterCondition.AND:
        return np.asarray(np.logical_and.reduce(parts), dtype=bool)
    if condition == FilterCondition.OR:
        return np.asarray(np.logical_or.reduce(parts), dtype=bool)
    return ~np.asarray(np.logical_or.reduce(parts), dtype=bool)  # NOT


def _equal(column: Column, value: Any) -> np.ndarray:
    kind = kind_of(value)
    if kind == NUMBER:
        if column.exact and not _big_int(value):
            return np.asarray(column.floats == float(value), dtype=bool)
        equal = np.zeros(len(column.values), dtype=bool)
        equal[column.is_number] = [v == value for v in column.values[column.is_number]]  # Python compares exactly
        return equal
    same = column.kinds == kind
    equal = np.zeros(len(column.values), dtype=bool)
    equal[same] = column.values[same] == value
    return equal


def _range(column: Column, value: Any, compare: Callable[..., Any]) -> np.ndarray:
    if column.exact and not _big_int(value):
        with np.errstate(invalid="ignore"):
            result: np.ndarray = compare(column.floats, float(value)) & column.is_number
        return result
    result = np.zeros(len(column.values), dtype=bool)
    result[column.is_number] = [bool(compare(v, value)) for v in column.values[column.is_number]]
    return result


_RANGES: dict[FilterOperator, Callable[[Any, Any], Any]] = {  # elementwise on arrays, exact on Python numbers
    FilterOperator.GT: operator.gt,
    FilterOperator.GTE: operator.ge,
    FilterOperator.LT: operator.lt,
    FilterOperator.LTE: operator.le,
}


def _leaf(condition: MetadataFilter, columns: MetadataColumns) -> np.ndarray:
    column = columns.column(condition.key)
    op, value = condition.operator, condition.value
    if op in (FilterOperator.EQ, FilterOperator.NE):
        equal = _equal(column, value)
        return equal if op == FilterOperator.EQ else ~equal
    if op in (FilterOperator.IN, FilterOperator.NIN):
        assert isinstance(value, list)  # check_filters made sure
        found: np.ndarray = np.logical_or.reduce([_equal(column, v) for v in value])
        return found if op == FilterOperator.IN else np.logical_not(found)
    return _range(column, value, _RANGES[op])
