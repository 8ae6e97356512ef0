"""ClusterVectorStore inside real LlamaIndex apps on real Chroma: the whole VectorStoreIndex
surface, zero copy, writes by another process, and metadata filters as a property."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import chromadb
import numpy as np
import pytest
from chromadb.config import Settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.llms import MockLLM
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)
from llama_index.vector_stores.chroma import ChromaVectorStore

from cluster_retriever import ClusterIndex, ClusterVectorStore

from .chroma_server import chroma_server
from .hash_embedding import HashEmbedding, text_of

REPO = Path(__file__).resolve().parents[1]
TENANTS = ["acme", "globex", "initech"]


def app_documents(n: int = 240) -> list[Document]:
    return [
        Document(
            id_=f"doc{i}",
            text=text_of(i),
            metadata={"tenant": TENANTS[i % 3], "year": 2000 + i % 25, "public": i % 4 == 0},
        )
        for i in range(n)
    ]


def make_app(client, embed) -> tuple[ChromaVectorStore, VectorStoreIndex]:
    collection = client.get_or_create_collection("app_docs")
    chroma = ChromaVectorStore(chroma_collection=collection)
    VectorStoreIndex.from_documents(
        app_documents(), storage_context=StorageContext.from_defaults(vector_store=chroma), embed_model=embed
    )
    return chroma, collection


def tenant(name: str) -> MetadataFilters:
    return MetadataFilters(filters=[MetadataFilter(key="tenant", value=name)])


def test_a_llamaindex_app_runs_unchanged_on_the_cluster_store(tmp_path):
    embed = HashEmbedding()
    client = chromadb.PersistentClient(str(tmp_path / "app"), settings=Settings(anonymized_telemetry=False))
    chroma, collection = make_app(client, embed)
    store = ClusterVectorStore.from_chroma(chroma, embed_model=embed)
    index = VectorStoreIndex.from_vector_store(store, embed_model=embed)

    # zero copy: the documents stay in the app's collection; the index adds centroids, assignments, a manifest
    names = {c.name for c in client.list_collections()}
    assert "app_docs" in names and not any(name.endswith(".nodes") for name in names)
    assert store.index.manifest.data_collection == "app_docs" and not store.index.manifest.owns_data

    # insert and delete_ref_doc write through to the collection and the clusters
    index.insert(Document(id_="new-doc", text="pastry chef croissant special", metadata={"tenant": "acme", "year": 2030}))
    assert collection.count() == 241 and len(store.index) == 241
    top = index.as_retriever(similarity_top_k=3).retrieve("pastry chef croissant special")
    assert top[0].node.ref_doc_id == "new-doc"
    index.delete_ref_doc("new-doc")
    assert collection.count() == 240 and len(store.index) == 240

    # filtered queries through a query engine: nothing from another tenant, k hits
    engine = index.as_query_engine(llm=MockLLM(), similarity_top_k=7, filters=tenant("globex"))
    response = engine.query("spark etl pipeline airflow")
    assert len(response.source_nodes) == 7 and all(n.node.metadata["tenant"] == "globex" for n in response.source_nodes)

    # async under gather: the same answers as sync
    retriever = index.as_retriever(similarity_top_k=5)
    queries = ["tax invoice ledger", "roadmap backlog product", "pastry chef croissant dough"] * 4
    sync = [[n.node.node_id for n in retriever.retrieve(q)] for q in queries]

    async def many():
        return await asyncio.gather(*(retriever.aretrieve(q) for q in queries))

    assert [[n.node.node_id for n in hits] for hits in asyncio.run(many())] == sync

    # refresh_ref_docs: a changed document is replaced, a new one inserted
    index.insert(Document(id_="versioned", text="tax invoice ledger draft", metadata={"tenant": "acme"}))
    changed = [
        Document(id_="versioned", text="tax invoice ledger final audit", metadata={"tenant": "acme"}),
        Document(id_="fresh", text="roadmap backlog product launch", metadata={"tenant": "acme"}),
    ]
    assert index.refresh_ref_docs(changed) == [True, True]
    texts = {n.ref_doc_id: n.get_content() for n in store.get_nodes(filters=tenant("acme"))}
    assert texts["versioned"] == "tax invoice ledger final audit" and "fresh" in texts
    index.delete_ref_doc("versioned")
    index.delete_ref_doc("fresh")

    # a chat engine answers from the cluster store's context
    chat = index.as_chat_engine(chat_mode="context", llm=MockLLM(), similarity_top_k=3)
    reply = chat.chat("who bakes croissants?")
    assert len(reply.source_nodes) == 3

    # an ingestion pipeline writes through the store too
    pipeline = IngestionPipeline(transformations=[embed], vector_store=store)
    pipeline.run(documents=[Document(id_="piped", text="tax invoice ledger audit", metadata={"tenant": "initech"})])
    assert collection.count() == 241 and "piped" in {n.node_id for n in store.get_nodes(filters=tenant("initech"))}
    assert "piped" in store.index.lists


def test_an_empty_collection_is_clustered_as_nodes_arrive(tmp_path):
    embed = HashEmbedding()
    client = chromadb.PersistentClient(str(tmp_path / "app"), settings=Settings(anonymized_telemetry=False))
    chroma = ChromaVectorStore(chroma_collection=client.get_or_create_collection("empty_docs"))
    store = ClusterVectorStore.from_chroma(chroma, embed_model=embed)
    index = VectorStoreIndex.from_vector_store(store, embed_model=embed)
    assert index.as_retriever().retrieve("anything") == []
    for document in app_documents(60):
        index.insert(document)
    assert len(store.index) == 60 and store.index.manifest.clustered_count >= 30  # re-clustered as it doubled
    assert store.index.n_clusters > 1


def test_disk_and_memory_per_document_of_adoption(tmp_path):
    """Adopting adds only centroids, assignments and a manifest: its on-disk size per
    document is measured against the app's own collection (printed for the README)."""
    embed = HashEmbedding()
    app_dir, index_dir = tmp_path / "app", tmp_path / "copy"
    client = chromadb.PersistentClient(str(app_dir), settings=Settings(anonymized_telemetry=False))
    make_app(client, embed)
    before = sum(f.stat().st_size for f in app_dir.rglob("*") if f.is_file())
    store = ClusterVectorStore.from_chroma(
        ChromaVectorStore(chroma_collection=client.get_collection("app_docs")), embed_model=embed
    )
    after = sum(f.stat().st_size for f in app_dir.rglob("*") if f.is_file())
    copy = ClusterIndex.build(app_documents(), path=index_dir, embed_model=embed, show_progress=False)
    copied = sum(f.stat().st_size for f in index_dir.rglob("*") if f.is_file())
    extra = (after - before) / 240
    print(f"adopted: +{extra:.0f} B/doc on disk; a built copy: {copied / 240:.0f} B/doc; app collection {before / 240:.0f} B/doc")
    assert after - before < copied  # adopting costs less than a copy of the documents
    copy.close()
    store.index.close()


@pytest.mark.server
@pytest.mark.slow
def test_writes_by_another_process_become_visible(tmp_path):
    embed = HashEmbedding()
    with chroma_server(tmp_path / "server") as port:
        client = chromadb.HttpClient(host="127.0.0.1", port=port, settings=Settings(anonymized_telemetry=False))
        chroma, collection = make_app(client, embed)
        store = ClusterVectorStore.from_chroma(chroma, embed_model=embed, max_staleness_s=None)
        index = VectorStoreIndex.from_vector_store(store, embed_model=embed)
        writer = (
            "import chromadb\n"
            "from chromadb.config import Settings\n"
            "from llama_index.core import Document, StorageContext, VectorStoreIndex\n"
            "from llama_index.vector_stores.chroma import ChromaVectorStore\n"
            "from tests.hash_embedding import HashEmbedding\n"
            f"client = chromadb.HttpClient(host='127.0.0.1', port={port}, settings=Settings(anonymized_telemetry=False))\n"
            "chroma = ChromaVectorStore(chroma_collection=client.get_collection('app_docs'))\n"
            "app = VectorStoreIndex.from_vector_store(chroma, embed_model=HashEmbedding())\n"
            "app.insert(Document(id_='from-elsewhere', text='volcano lava magma eruption', metadata={'tenant': 'acme'}))\n"
            "app.delete_ref_doc('doc5')\n"
        )
        done = subprocess.run([sys.executable, "-c", writer], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        retriever = index.as_retriever(similarity_top_k=3)
        assert store.refresh() is True
        hits = retriever.retrieve("volcano lava magma eruption")
        assert hits[0].node.ref_doc_id == "from-elsewhere"
        assert not any(n.ref_doc_id == "doc5" for n in store.get_nodes(filters=tenant("initech")))
        assert len(store.index) == collection.count() == 240

        # without an explicit refresh: a query notices within max_staleness_s
        store.index.max_staleness_s = 0.0
        done = subprocess.run(
            [sys.executable, "-c", writer.replace("from-elsewhere", "second").replace("app.delete_ref_doc('doc5')\n", "")],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert "second" in {n.node.ref_doc_id for n in retriever.retrieve("volcano lava magma eruption")}


# -- filters as a property: hits are always inside the exact filtered set ---------------------------------------------

KEYS = ["tenant", "year", "public", "score"]


def leaf_strategy():
    tenant_leaf = st.builds(
        lambda op, v: MetadataFilter(key="tenant", operator=op, value=v if op not in ("in", "nin") else [v]),
        st.sampled_from(["==", "!=", "in", "nin"]),
        st.sampled_from(TENANTS),
    )
    year_leaf = st.builds(
        lambda op, v: MetadataFilter(key="year", operator=op, value=v if op not in ("in", "nin") else [v, v + 1]),
        st.sampled_from(["==", "!=", ">", ">=", "<", "<=", "in", "nin"]),
        st.integers(1998, 2026),
    )
    score_leaf = st.builds(
        lambda op, v: MetadataFilter(key="score", operator=op, value=v), st.sampled_from([">", "<=", "!="]), st.floats(0, 1)
    )
    return st.one_of(tenant_leaf, year_leaf, score_leaf)


filters_strategy = st.recursive(
    st.builds(
        lambda leaves, cond: MetadataFilters(filters=leaves, condition=cond),
        st.lists(leaf_strategy(), min_size=1, max_size=3),
        st.sampled_from([FilterCondition.AND, FilterCondition.OR]),
    ),
    lambda inner: st.builds(
        lambda parts, cond: MetadataFilters(filters=parts, condition=cond),
        st.lists(st.one_of(inner, leaf_strategy()), min_size=1, max_size=3),
        st.sampled_from([FilterCondition.AND, FilterCondition.OR]),
    ),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def filtered_store(tmp_path_factory):
    embed = HashEmbedding()
    client = chromadb.PersistentClient(str(tmp_path_factory.mktemp("filters")), settings=Settings(anonymized_telemetry=False))
    collection = client.get_or_create_collection("filter_docs")
    chroma = ChromaVectorStore(chroma_collection=collection)
    rng = np.random.default_rng(0)
    nodes = []
    for i in range(600):
        metadata = {"tenant": TENANTS[int(rng.integers(3))], "year": int(rng.integers(2000, 2025))}
        if rng.random() < 0.7:  # some documents lack the key
            metadata["score"] = float(rng.random())
        node = TextNode(id_=f"n{i}", text=text_of(i), metadata=metadata)
        node.embedding = embed.get_text_embedding(node.text)
        nodes.append(node)
    chroma.add(nodes)
    store = ClusterVectorStore.from_chroma(chroma, embed_model=embed, n_clusters=24)
    return store, collection, embed


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(filters=filters_strategy, query=st.integers(0, 599), k=st.sampled_from([1, 5, 20, 80]))
def test_filtered_hits_are_always_in_the_exact_filtered_set(filtered_store, filters, query, k):
    store, collection, embed = filtered_store
    from cluster_retriever.store.records import chroma_where

    allowed = set(collection.get(where=chroma_where(filters), include=[])["ids"])
    vector = embed.get_query_embedding(text_of(query))
    for mode in ("routed", "strict", "flat"):
        store.mode = mode
        result = store.query(VectorStoreQuery(query_embedding=vector, similarity_top_k=k, filters=filters))
        assert set(result.ids) <= allowed
        assert len(result.ids) == min(k, len(allowed)) == len(set(result.ids))
    store.mode = "routed"
    # flat is an exact filtered search: the same top-k as brute force over the allowed set
    if allowed:
        store.mode = "flat"
        flat = store.query(VectorStoreQuery(query_embedding=vector, similarity_top_k=k, filters=filters))
        store.mode = "routed"
        lists = store.index.lists
        rows = [i for i, doc_id in enumerate(lists.ids) if doc_id in allowed]
        q = np.asarray(vector) / np.linalg.norm(vector)
        scores = lists.vectors[rows] @ q
        assert np.allclose(sorted(flat.similarities, reverse=True), sorted(scores, reverse=True)[: len(flat.ids)], atol=1e-5)


def test_node_and_doc_id_restrictions(filtered_store):
    store, _, embed = filtered_store
    vector = embed.get_query_embedding("pastry chef")
    result = store.query(VectorStoreQuery(query_embedding=vector, similarity_top_k=5, node_ids=["n1", "n2", "n3"]))
    assert set(result.ids) == {"n1", "n2", "n3"}
    with pytest.raises(ValueError, match="take a number"):
        store.query(
            VectorStoreQuery(
                query_embedding=vector,
                similarity_top_k=5,
                filters=MetadataFilters(filters=[MetadataFilter(key="year", operator=FilterOperator.GT, value="x")]),
            )
        )
