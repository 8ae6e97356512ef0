"""Metadata filters as a security boundary: Chroma's exact semantics (checked against Chroma's own
``where``), and no hit outside the filter whatever the app or another handle writes."""

from __future__ import annotations

import chromadb
import chromadb.errors
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)
from llama_index.core.vector_stores.utils import node_to_metadata_dict
from llama_index.vector_stores.chroma import ChromaVectorStore

from cluster_retriever import ClusterIndex, ClusterVectorStore, SearchParams
from cluster_retriever.errors import InvalidEmbeddingError
from cluster_retriever.filters import MetadataColumns, Restriction, evaluate, filterable
from cluster_retriever.scan.lists import InvertedLists
from cluster_retriever.store.records import chroma_where

from .hash_embedding import HashEmbedding, text_of

BIG = 2**53
ROWS = [
    {"n": 1},
    {"n": 1.0},
    {"n": BIG},
    {"n": BIG + 1},
    {"n": -BIG - 1},
    {"n": 1.5},
    {"n": "1"},
    {"flag": True},
    {"flag": False},
    {"_tenant": "acme"},
    {"_tenant": "globex"},
    {"other": 3},
]


def leaf(key, value, op="=="):
    return MetadataFilter(key=key, value=value, operator=FilterOperator(op))


def group(*parts, condition="and"):
    return MetadataFilters(filters=list(parts), condition=FilterCondition(condition))


def bool_leaf(key, value, op="=="):
    return MetadataFilter.model_construct(key=key, value=value, operator=FilterOperator(op))  # pydantic refuses bools


CASES = [
    group(leaf("n", 1)),
    group(leaf("n", 1.0)),
    group(leaf("n", BIG)),
    group(leaf("n", BIG, "!=")),
    group(leaf("n", BIG + 1)),
    group(leaf("n", BIG, ">")),
    group(leaf("n", BIG, ">=")),
    group(leaf("n", -BIG, "<")),
    group(leaf("n", 1, ">")),
    group(leaf("n", [1, BIG + 1], "in")),
    group(leaf("n", [BIG], "nin")),
    group(leaf("_tenant", "acme")),
    group(leaf("_tenant", "acme", "!=")),
    group(bool_leaf("flag", True)),
    group(bool_leaf("flag", True, "!=")),
    group(leaf("n", 1), leaf("_tenant", "acme"), condition="or"),
]


@pytest.fixture(scope="module")
def semantics():
    collection = chromadb.EphemeralClient().get_or_create_collection("filter-semantics")
    ids = [f"r{i}" for i in range(len(ROWS))]
    collection.add(ids=ids, embeddings=[[1.0, float(i)] for i in range(len(ROWS))], metadatas=ROWS)
    return collection, ids


@pytest.mark.parametrize("filters", CASES, ids=[str(i) for i in range(len(CASES))])
def test_filters_select_exactly_what_chromas_where_selects(semantics, filters):
    collection, ids = semantics
    expected = set(collection.get(where=chroma_where(filters), include=[])["ids"])
    mask = evaluate(filters, MetadataColumns([filterable(m) for m in ROWS]))
    assert {ids[i] for i in np.flatnonzero(mask)} == expected


@pytest.mark.parametrize(
    "filters",
    [
        group(leaf("n", 1), group(condition="or"), condition="or"),  # an empty nested group fails open otherwise
        group(leaf("n", 1), group()),
        group(leaf("n", float("nan"), "!=")),
        group(leaf("n", float("inf"))),
        group(leaf("n", "x", ">")),
        group(MetadataFilter.model_construct(key="n", value=[1, "1"], operator=FilterOperator.IN)),
        group(MetadataFilter.model_construct(key="n", value=[], operator=FilterOperator.IN)),
    ],
)
def test_filters_chroma_refuses_are_refused_with_what_to_change(semantics, filters):
    collection, _ = semantics
    with pytest.raises((ValueError, chromadb.errors.InvalidArgumentError)):
        collection.get(where=chroma_where(filters))
    with pytest.raises(ValueError, match="empty|finite|number|list"):
        evaluate(filters, MetadataColumns([filterable(m) for m in ROWS]))


def test_the_mask_cache_keeps_true_and_one_apart():
    lists = InvertedLists(np.eye(2, dtype=np.float32), ["a", "b"], np.eye(2, dtype=np.float32), [0, 1], [{"x": True}, {"x": 1}])
    one, true = group(leaf("x", 1)), group(bool_leaf("x", True))
    assert lists.mask(Restriction(one)).tolist() == [False, True]
    assert lists.mask(Restriction(true)).tolist() == [True, False]


# -- no leak, whatever is written -------------------------------------------------------------------------------------

TENANTS = ["acme", "globex", "initech"]


def node(i: int, tenant: str, text: str | None = None, embed=None) -> TextNode:
    n = TextNode(id_=f"n{i}", text=text or text_of(i), metadata={"tenant": tenant, "user": BIG + i % 2})
    n.embedding = (embed or HashEmbedding()).get_text_embedding(n.text)
    return n


@pytest.fixture
def app(tmp_path):
    """An app's own collection of 400 nodes, wrapped, with routing forced on."""
    embed = HashEmbedding()
    client = chromadb.PersistentClient(path=str(tmp_path / "app"))
    chroma = ChromaVectorStore(chroma_collection=client.get_or_create_collection("tenants"))
    chroma.add([node(i, TENANTS[i % 3], embed=embed) for i in range(400)])
    routing = SearchParams(exact_scan_max_floats=0)
    store = ClusterVectorStore.from_chroma(
        chroma, embed_model=embed, n_clusters=12, show_progress=False, max_staleness_s=0.0, search_params=routing
    )
    return store, chroma, embed, client


def app_moves(chroma: ChromaVectorStore, moved: TextNode, upsert: bool = True) -> None:
    """The app rewrites a record itself: Chroma's upsert in LlamaIndex's record format, or
    ``delete_nodes`` + ``add`` (``ChromaVectorStore.add`` alone keeps the first record of an id)."""
    if upsert:
        metadata = node_to_metadata_dict(moved, remove_text=True, flat_metadata=True)
        chroma._collection.upsert(ids=[moved.node_id], embeddings=[moved.embedding], documents=[moved.text], metadatas=[metadata])
    else:
        chroma.delete_nodes([moved.node_id])
        chroma.add([moved])


def tenant_is(name: str) -> MetadataFilters:
    return group(leaf("tenant", name))


def query_ids(store, embed, text, filters, k=10) -> list[str]:
    vector = embed.get_query_embedding(text)
    return store.query(VectorStoreQuery(query_embedding=vector, similarity_top_k=k, filters=filters)).ids


def test_a_tenant_change_by_the_app_never_leaks_and_refresh_follows_it(app):
    store, chroma, embed, client = app
    assert "n0" in query_ids(store, embed, text_of(0), tenant_is("acme"))
    app_moves(chroma, node(0, "globex", embed=embed))  # the app's own write: n0 moves to globex
    for _ in range(10):
        hits = query_ids(store, embed, text_of(0), tenant_is("acme"))
        assert "n0" not in hits and len(hits) == 10  # topped up from further candidates
    acme = store.index.search_params.restricted(tenant_is("acme"))
    ids_only = store.index.search(np.asarray(embed.get_query_embedding(text_of(0)), np.float32) / 1, 10, acme)
    assert "n0" not in ids_only.ids
    # a new handle, from the lists file written before the change, does not leak either
    reopened = ClusterIndex.open(store.index.store.name, client=client, embed_model=embed)
    vector = embed.get_query_embedding(text_of(0))
    vector = np.asarray(vector, np.float32) / np.linalg.norm(vector)
    assert "n0" not in reopened.search(vector, 10, acme, with_nodes=False).ids
    assert store.refresh() is True  # reads every record's metadata: the move is seen
    assert query_ids(store, embed, text_of(0), tenant_is("globex"))[0] == "n0"


def test_a_re_add_through_another_handle_replaces_vector_and_columns(app):
    store, chroma, embed, client = app
    other = ClusterIndex.open(store.index.store.name, client=client, embed_model=embed)
    other.delete(["n3"])
    other.add([node(3, "initech", text="volcano lava magma eruption", embed=embed)])
    assert "n3" not in query_ids(store, embed, text_of(3), tenant_is("acme"))  # within max_staleness_s (0 here)
    vector = np.asarray(embed.get_query_embedding("volcano lava magma eruption"), np.float32)
    hit = store.index.search(vector / np.linalg.norm(vector), 1, SearchParams().restricted(tenant_is("initech"))).hits[0]
    assert hit.node.node_id == "n3" and hit.score == pytest.approx(1.0, abs=1e-5)
    # the vector store's add is an upsert, seen by the other handle too
    store.add([node(3, "globex", text="glacier ice fjord", embed=embed)])
    vector = np.asarray(embed.get_query_embedding("glacier ice fjord"), np.float32)
    other.max_staleness_s = 0.0
    found = other.search(vector / np.linalg.norm(vector), 1, SearchParams().restricted(tenant_is("globex")))
    assert found.ids == ["n3"] and found.scores[0] == pytest.approx(1.0, abs=1e-5)


def test_big_integer_ids_filter_exactly(app):
    store, _, embed, _ = app
    even = set(query_ids(store, embed, text_of(1), group(leaf("user", BIG)), k=400))
    odd = set(query_ids(store, embed, text_of(1), group(leaf("user", BIG, "!=")), k=400))
    assert even == {f"n{i}" for i in range(0, 400, 2)} and odd == {f"n{i}" for i in range(1, 400, 2)}


def test_a_bad_embedding_anywhere_in_a_write_is_refused_before_anything_is_written(app):
    store, chroma, embed, _ = app
    good, bad = node(500, "acme", embed=embed), node(501, "acme", embed=embed)
    bad.embedding = [float("nan")] * len(bad.embedding)
    with pytest.raises(InvalidEmbeddingError, match="n501"):
        store.index.add([good, bad])
    assert chroma._collection.count() == 400


CHANGES = st.lists(
    st.tuples(
        st.sampled_from(["app_upsert", "library_replace", "delete", "query"]), st.integers(0, 399), st.sampled_from(TENANTS)
    ),
    min_size=3,
    max_size=12,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=CHANGES)
def test_random_metadata_changes_between_filtered_queries_never_leak(app, changes):
    store, chroma, embed, _ = app
    collection = chroma._collection
    for action, i, tenant in changes:
        if action == "app_upsert":
            app_moves(chroma, node(i, tenant, embed=embed), upsert=i % 2 == 0)
        elif action == "library_replace":
            store.add([node(i, tenant, text=f"{text_of(i)} moved", embed=embed)])
        elif action == "delete":
            store.delete_nodes([f"n{i}"])
        filters = tenant_is(tenant)
        allowed = set(collection.get(where=chroma_where(filters), include=[])["ids"])
        hits = query_ids(store, embed, text_of(i), filters, k=20)
        assert set(hits) <= allowed
    store.refresh()
    for tenant in TENANTS:
        filters = tenant_is(tenant)
        allowed = set(collection.get(where=chroma_where(filters), include=[])["ids"])
        hits = query_ids(store, embed, "anything at all", filters, k=len(allowed) + 5)
        assert set(hits) == allowed  # after refresh(), the columns are Chroma's again


def test_records_deleted_behind_the_index_are_replaced_by_further_candidates(app):
    store, chroma, embed, _ = app
    store.index.max_staleness_s = None  # the index does not look: only the hits' fetch sees the deletes
    before = query_ids(store, embed, text_of(9), tenant_is("acme"), k=10)
    chroma._collection.delete(ids=before[:4])  # another client deletes four of the ten winners
    after = query_ids(store, embed, text_of(9), tenant_is("acme"), k=10)
    assert len(after) == 10 and not set(after) & set(before[:4]) and after[:6] == before[4:]


@pytest.mark.server
@pytest.mark.slow
def test_metadata_changes_from_another_process_never_leak(tmp_path):
    """Another process (a Chroma server between them) changes tenants by the app's own upserts
    and by the library's replaces and deletes; every filtered query here stays inside Chroma's
    own ``where``, and after refresh() equals it."""
    import json
    import random
    import subprocess
    import sys
    from pathlib import Path

    from .chroma_server import chroma_server

    embed = HashEmbedding()
    with chroma_server(tmp_path / "server") as port:
        client = chromadb.HttpClient(host="127.0.0.1", port=port)
        chroma = ChromaVectorStore(chroma_collection=client.get_or_create_collection("tenants"))
        chroma.add([node(i, TENANTS[i % 3], embed=embed) for i in range(300)])
        routing = SearchParams(exact_scan_max_floats=0)
        store = ClusterVectorStore.from_chroma(
            chroma, embed_model=embed, n_clusters=10, show_progress=False, max_staleness_s=0.0, search_params=routing
        )
        writer = subprocess.Popen(
            [sys.executable, "-m", "tests.metadata_writer", str(port), "tenants", store.index.store.name],
            cwd=Path(__file__).resolve().parents[1],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            rng = random.Random(7)
            collection = chroma._collection
            for _ in range(30):
                i, tenant = rng.randrange(300), rng.choice(TENANTS)
                op = rng.choice(["app_upsert", "library_replace", "delete"])
                writer.stdin.write(json.dumps({"op": op, "i": i, "tenant": tenant}) + "\n")
                writer.stdin.flush()
                assert writer.stdout.readline().strip() == "ok"
                filters = tenant_is(tenant)
                allowed = set(collection.get(where=chroma_where(filters), include=[])["ids"])
                assert set(query_ids(store, embed, text_of(i), filters, k=20)) <= allowed
            store.refresh()
            for tenant in TENANTS:
                filters = tenant_is(tenant)
                allowed = set(collection.get(where=chroma_where(filters), include=[])["ids"])
                assert set(query_ids(store, embed, "anything at all", filters, k=len(allowed) + 5)) == allowed
        finally:
            writer.stdin.close()
            writer.wait(timeout=60)
