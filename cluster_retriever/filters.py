"""LlamaIndex ``MetadataFilters`` evaluated over in-memory metadata columns, with Chroma's
semantics (so a routed search filters exactly as ``ChromaVectorStore`` would):

- ``==``, ``in``: the key must exist with a value of the same kind (a number matches a
  number, a string a string, a bool a bool);
- ``!=``, ``nin``: everything ``==`` / ``in`` does not match, documents without the key included;
- ``>``, ``>=``, ``<``, ``<=``: numbers only (a string operand is an error, as in Chroma);
- ``and`` / ``or`` nesting of any depth.

A filter becomes a boolean mask over the rows of the inverted lists; masks are cached per
filter on the (immutable) lists, so a tenant's filter costs its evaluation once.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from llama_index.core.vector_stores.types import FilterCondition, FilterOperator, MetadataFilter, MetadataFilters

MISSING, BOOL, NUMBER, TEXT, OTHER = 0, 1, 2, 3, 4


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


class MetadataColumns:
    """Per-key columns (values, kinds, numbers) built lazily from one metadata dict per row."""

    def __init__(self, metadatas: np.ndarray) -> None:
        self.metadatas = metadatas  # object array of dicts, aligned with the rows
        self._columns: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def column(self, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if key not in self._columns:
            values = np.empty(len(self.metadatas), dtype=object)
            values[:] = [m.get(key) for m in self.metadatas]
            kinds = np.fromiter((kind_of(v) for v in values), dtype=np.int8, count=len(values))
            numbers_ = np.full(len(values), np.nan)
            is_number = kinds == NUMBER
            numbers_[is_number] = values[is_number].astype(np.float64)
            self._columns[key] = (values, kinds, numbers_)
        return self._columns[key]


def filter_key(filters: MetadataFilters | None, node_ids: Sequence[str] | None, doc_ids: Sequence[str] | None) -> str:
    """A cache key for a filter and its id restrictions."""
    return json.dumps(
        [filters.model_dump(mode="json") if filters else None, sorted(node_ids or []), sorted(doc_ids or [])],
        sort_keys=True,
        default=str,
    )


def evaluate(filters: MetadataFilters, columns: MetadataColumns) -> np.ndarray:
    """The rows whose metadata passes ``filters``."""
    parts = [evaluate(part, columns) if isinstance(part, MetadataFilters) else _leaf(part, columns) for part in filters.filters]
    n = len(columns.metadatas)
    if not parts:
        return np.ones(n, dtype=bool)
    condition = filters.condition or FilterCondition.AND
    if condition == FilterCondition.AND:
        return np.asarray(np.logical_and.reduce(parts), dtype=bool)
    if condition == FilterCondition.OR:
        return np.asarray(np.logical_or.reduce(parts), dtype=bool)
    if condition == FilterCondition.NOT:
        return ~np.asarray(np.logical_or.reduce(parts), dtype=bool)
    raise ValueError(f"Filter condition {condition!r} is not supported: use 'and', 'or' or 'not'.")


def _same_kind_equal(column: tuple[np.ndarray, np.ndarray, np.ndarray], value: Any) -> np.ndarray:
    values, kinds, numbers_ = column
    kind = kind_of(value)
    if kind == NUMBER:
        return np.asarray(numbers_ == float(value), dtype=bool)
    if kind in (BOOL, TEXT):
        same = kinds == kind
        equal = np.zeros(len(values), dtype=bool)
        equal[same] = values[same] == value
        return equal
    raise ValueError(f"Metadata filter value {value!r} is not a string, number or bool.")


def _range(column: tuple[np.ndarray, np.ndarray, np.ndarray], value: Any, compare: Callable[..., np.ndarray]) -> np.ndarray:
    if kind_of(value) != NUMBER:
        raise ValueError(f"Range filters (>, >=, <, <=) take a number, as in Chroma; got {value!r}.")
    _, _, numbers_ = column
    with np.errstate(invalid="ignore"):
        result: np.ndarray = compare(numbers_, float(value)) & ~np.isnan(numbers_)
    return result


def _leaf(condition: MetadataFilter, columns: MetadataColumns) -> np.ndarray:
    column = columns.column(condition.key)
    operator, value = condition.operator, condition.value
    if operator == FilterOperator.EQ:
        return _same_kind_equal(column, value)
    if operator == FilterOperator.NE:
        return ~_same_kind_equal(column, value)
    if operator in (FilterOperator.IN, FilterOperator.NIN):
        if not isinstance(value, list) or not value:
            raise ValueError(f"'{operator.value}' takes a non-empty list of values, not {value!r}.")
        found = np.asarray(np.logical_or.reduce([_same_kind_equal(column, v) for v in value]), dtype=bool)
        return found if operator == FilterOperator.IN else ~found
    comparisons: dict[FilterOperator, Callable[..., np.ndarray]] = {
        FilterOperator.GT: np.greater,
        FilterOperator.GTE: np.greater_equal,
        FilterOperator.LT: np.less,
        FilterOperator.LTE: np.less_equal,
    }
    if operator in comparisons:
        return _range(column, value, comparisons[operator])
    raise ValueError(
        f"Filter operator {operator.value!r} is not supported (ChromaVectorStore supports ==, !=, >, >=, <, <=, in, nin)."
    )
