import numpy as np
import pytest
from llama_index.core import Document
from llama_index.core.embeddings import MockEmbedding

from cluster_retriever import ClusterIndex, SearchParams
from cluster_retriever.embeddings import DEFAULT_MODEL_ID
from cluster_retriever.errors import DuplicateIdError, EmbeddingMismatchError, EmptyCorpusError, IndexNotFoundError
from cluster_retriever.store.records import CLUSTER_ID_KEY

pytestmark = pytest.mark.slow


def top_ids(index, query, k=5, **kwargs):
    return [hit.node.node_id for hit in index.as_retriever(similarity_top_k=k, **kwargs).retrieve(query)]


def test_build_stores_nodes_with_cluster_ids_centroids_and_manifest(index, docs):
    manifest = index.manifest
    assert (index.doc_count, manifest.n_clusters, manifest.dimension) == (len(docs), 4, 384)
    assert manifest.embed_model == DEFAULT_MODEL_ID
    stored = {doc_id for doc_id, _, _ in index.store.iter_records(manifest.data_collection)}
    assignments = index.store.read_assignments(manifest.generation)
    assert stored == set(assignments) == {d.doc_id for d in docs}
    assert all(assignments[i] == index.lists.cluster_of(i) for i in stored)
    assert index.store.read_centroids(manifest.generation).shape == (4, 384)
    # each role lands in one cluster: the roles are far apart
    for role in ("pmm", "de", "chef"):
        assert len({index.lists.cluster_of(f"{role}-{i}") for i in range(5)}) == 1


def test_build_is_reproducible(tmp_path, embed_model, docs):
    a = ClusterIndex.build(docs, path=tmp_path / "a", embed_model=embed_model, n_clusters=4, show_progress=False)
    b = ClusterIndex.build(docs, path=tmp_path / "b", embed_model=embed_model, n_clusters=4, show_progress=False)
    assert all(a.lists.cluster_of(d.doc_id) == b.lists.cluster_of(d.doc_id) for d in docs)


def test_open_reads_the_manifest_and_gives_the_same_results(tmp_path, index, embed_model):
    reopened = ClusterIndex.open(path=tmp_path / "chroma", embed_model=embed_model)
    assert reopened.manifest == index.manifest
    assert top_ids(reopened, "bakery desserts") == top_ids(index, "bakery desserts")


def test_open_without_a_model_loads_the_manifest_model(tmp_path, index):
    reopened = ClusterIndex.open(path=tmp_path / "chroma")
    assert top_ids(reopened, "spark pipelines", 3)[0].startswith("de-")


def test_open_refuses_another_model(tmp_path, index):
    with pytest.raises(EmbeddingMismatchError, match="built with 'sentence-transformers/all-MiniLM-L6-v2'"):
        ClusterIndex.open(path=tmp_path / "chroma", embed_model=MockEmbedding(embed_dim=384))


def test_open_refuses_another_dimension(tmp_path, index):
    same_name = MockEmbedding(embed_dim=8, model_name=DEFAULT_MODEL_ID)
    with pytest.raises(EmbeddingMismatchError, match="8-d vectors but the index stores 384-d"):
        ClusterIndex.open(path=tmp_path / "chroma", embed_model=same_name)


def test_open_missing_index_creates_nothing(tmp_path, index):
    with pytest.raises(IndexNotFoundError, match="No cluster index at .*nothing"):
        ClusterIndex.open(path=tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("just a text file")
    with pytest.raises(IndexNotFoundError, match="chroma.sqlite3 is missing"):
        ClusterIndex.open(path=tmp_path / "texts")
    assert sorted(p.name for p in (tmp_path / "texts").iterdir()) == ["a.txt"]
    with pytest.raises(IndexNotFoundError, match="No cluster index named 'other'"):
        ClusterIndex.open("other", path=tmp_path / "chroma")


def test_bad_input_keeps_the_existing_index(tmp_path, index, embed_model, docs):
    path = tmp_path / "chroma"
    before = top_ids(index, "roadmap backlog")
    with pytest.raises(EmptyCorpusError):
        ClusterIndex.build([], path=path, embed_model=embed_model, show_progress=False)
    with pytest.raises(ValueError, match="larger than the number of documents"):
        ClusterIndex.build(docs[:3], path=path, embed_model=embed_model, n_clusters=5, show_progress=False)
    with pytest.raises(DuplicateIdError, match="pmm-0"):
        ClusterIndex.build(docs + [docs[0]], path=path, embed_model=embed_model, show_progress=False)
    with pytest.raises(FileNotFoundError, match="No such folder"):
        ClusterIndex.build(tmp_path / "missing", path=path, embed_model=embed_model, show_progress=False)
    reopened = ClusterIndex.open(path=path, embed_model=embed_model)
    assert reopened.manifest == index.manifest
    assert top_ids(reopened, "roadmap backlog") == before


def test_crash_in_the_middle_of_a_build_leaves_the_previous_index(tmp_path, index, embed_model, docs):
    def exploding():
        yield from docs[:3]
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        ClusterIndex.build(exploding(), path=tmp_path / "chroma", embed_model=embed_model, batch_size=2, show_progress=False)
    reopened = ClusterIndex.open(path=tmp_path / "chroma", embed_model=embed_model)
    assert reopened.manifest == index.manifest and len(reopened) == len(docs)
    names = {c.name for c in index.store.client.list_collections()}
    assert names == {"cluster_index.manifest", "cluster_index.g1.nodes", "cluster_index.g1.centroids", "cluster_index.g1.assign"}


def test_rebuild_replaces_and_cleans_up_the_old_generation(tmp_path, index, embed_model, docs):
    rebuilt = ClusterIndex.build(docs[:8], path=tmp_path / "chroma", embed_model=embed_model, n_clusters=2, show_progress=False)
    assert rebuilt.manifest.generation == 2 and len(ClusterIndex.open(path=tmp_path / "chroma")) == 8
    names = {c.name for c in index.store.client.list_collections()}
    assert "cluster_index.g1.nodes" not in names


def test_add_goes_to_the_nearest_cluster_and_persists(tmp_path, index, embed_model):
    chef_cluster = index.lists.cluster_of("chef-0")
    index.add([Document(id_="chef-new", text="Pastry chef who bakes sourdough bread and plates desserts.")])
    assert index.lists.cluster_of("chef-new") == chef_cluster
    assert "chef-new" in top_ids(index, "sourdough bread baker", 3)
    reopened = ClusterIndex.open(path=tmp_path / "chroma", embed_model=embed_model)
    assert reopened.doc_count == 21 and reopened.lists.cluster_of("chef-new") == chef_cluster


def test_add_refuses_stored_or_repeated_ids(index):
    with pytest.raises(DuplicateIdError, match="already in the index"):
        index.add([Document(id_="pm-0", text="another")])
    with pytest.raises(DuplicateIdError, match="x"):
        index.add([Document(id_="x", text="a"), Document(id_="x", text="b")])
    with pytest.raises(EmptyCorpusError):
        index.add([])
    assert len(index) == 20


def test_delete(tmp_path, index, embed_model):
    index.delete(["chef-0", "chef-1"])
    assert not {"chef-0", "chef-1"} & set(top_ids(index, "croissants and desserts", 10, mode="flat"))
    with pytest.raises(KeyError, match="nothing was deleted"):
        index.delete(["chef-2", "nope"])
    reopened = ClusterIndex.open(path=tmp_path / "chroma", embed_model=embed_model)
    assert len(reopened) == 18 and "chef-2" in reopened.lists


def test_recluster_keeps_every_node(tmp_path, index, embed_model):
    before = top_ids(index, "warehouse modeling", 20, mode="flat")
    index.recluster(n_clusters=2)
    assert index.n_clusters == 2 and index.manifest.generation == 2
    assert sorted(top_ids(index, "warehouse modeling", 20, mode="flat")) == sorted(before)
    assert index.cluster_sizes.sum() == 20
    assert ClusterIndex.open(path=tmp_path / "chroma", embed_model=embed_model).n_clusters == 2


def test_query_racing_a_recluster_still_gets_its_documents(index, embed_model):
    """A recluster that lands between a query's scan and its fetch changes nothing for that
    query: the data is never copied or dropped by a recluster, only centroids and assignments."""
    from cluster_retriever.embeddings import embed_query

    query = embed_query(embed_model, "warehouse modeling")
    expected = [hit.node.node_id for hit in index.search(query, 5, SearchParams(mode="flat")).hits]
    old_generation = index.manifest.generation
    fetch = index.store.fetch

    def fetch_after_recluster(data, ids, **options):
        if index.manifest.generation == old_generation:
            index.recluster(n_clusters=2)  # lands between this query's scan and its fetch
        return fetch(data, ids, **options)

    index.store.fetch = fetch_after_recluster
    hits = index.search(query, 5, SearchParams(mode="flat")).hits
    assert index.manifest.generation == old_generation + 1
    assert [hit.node.node_id for hit in hits] == expected
    assert all(hit.node.get_content() for hit in hits)


def test_from_vector_store_reuses_stored_embeddings(tmp_path, embed_model, docs):
    import chromadb
    from chromadb.config import Settings
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.vector_stores.chroma import ChromaVectorStore

    client = chromadb.PersistentClient(str(tmp_path / "app"), settings=Settings(anonymized_telemetry=False))
    collection = client.get_or_create_collection("app_docs")
    vector_store = ChromaVectorStore(chroma_collection=collection)
    app_index = VectorStoreIndex.from_documents(
        docs, storage_context=StorageContext.from_defaults(vector_store=vector_store), embed_model=embed_model
    )
    query = "go-to-market launches"
    expected = [n.node.get_content() for n in app_index.as_retriever(similarity_top_k=5).retrieve(query)]

    class NoEmbedding:
        def _get_text_embeddings(self, texts):  # adoption must not re-embed documents
            raise AssertionError("re-embedded documents")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(embed_model), "_get_text_embeddings", NoEmbedding._get_text_embeddings)
        index = ClusterIndex.from_vector_store(
            app_index, client=client, embed_model=embed_model, n_clusters=4, show_progress=False
        )
    hits = index.as_retriever(similarity_top_k=5, mode="flat").retrieve(query)
    assert [h.node.get_content() for h in hits] == expected
    assert all(h.node.metadata["role"] == "pmm" for h in hits)
    assert collection.count() == len(docs)
    assert all(CLUSTER_ID_KEY not in m for m in collection.get(include=["metadatas"])["metadatas"])
    with pytest.raises(EmbeddingMismatchError, match="holds 384-d vectors"):
        ClusterIndex.from_vector_store(vector_store, client=client, embed_model=MockEmbedding(embed_dim=8), name="other")
    assert np.array_equal(
        np.sort(index.cluster_sizes), np.sort(np.bincount([index.lists.cluster_of(i) for i in index.lists.ids]))
    )


def test_cached_records_give_the_same_results_and_follow_changes(tmp_path, index, embed_model, monkeypatch):
    from_chroma = top_ids(index, "croissants", 8, mode="flat")
    cached = ClusterIndex.open(path=tmp_path / "chroma", embed_model=embed_model, cache_records=True)

    def no_fetch(*args):
        raise AssertionError("a cached index fetched records from Chroma")

    monkeypatch.setattr(cached.store, "fetch", no_fetch)
    assert top_ids(cached, "croissants", 8, mode="flat") == from_chroma
    hits = cached.as_retriever(similarity_top_k=3).retrieve("croissants")
    assert hits[0].node.metadata["cluster_id"] == cached.lists.cluster_of(hits[0].node.node_id)
    cached.add([Document(id_="chef-new", text="Pastry chef baking croissants at dawn.")])
    assert "chef-new" in top_ids(cached, "croissants at dawn", 3)
    cached.delete(["chef-new", "chef-0"])
    assert not {"chef-new", "chef-0"} & set(top_ids(cached, "croissants at dawn", 20, mode="flat"))
    cached.recluster(n_clusters=3)
    assert len(top_ids(cached, "croissants", 30, mode="flat")) == 19


def test_search_without_nodes_returns_the_same_ids_and_reads_no_documents(index, monkeypatch):
    from cluster_retriever.embeddings import embed_query

    query = embed_query(index.embed_model, "who writes user stories?")
    full = index.search(query, top_k=5)
    assert full.ids == [h.node.node_id for h in full.hits] and full.scores == [h.score for h in full.hits]

    def no_fetch(*args, **kwargs):
        raise AssertionError("documents were read")

    monkeypatch.setattr(index.store, "fetch", no_fetch)
    bare = index.search(query, top_k=5, with_nodes=False)
    assert bare.hits == [] and bare.ids == full.ids and bare.scores == full.scores and bare.stats == full.stats


def test_more_centroids_than_one_chroma_batch_are_written_and_read_back(tmp_path):
    from cluster_retriever.store.chroma import ChromaStore
    from cluster_retriever.store.clients import make_client

    store = ChromaStore(make_client(tmp_path), "big")
    k = store.client.get_max_batch_size() + 500  # about 300k documents' worth of clusters
    centroids = np.random.default_rng(0).normal(size=(k, 4)).astype(np.float32)
    store.write_centroids(1, centroids)
    assert np.allclose(store.read_centroids(1), centroids, atol=1e-6)  # Chroma rounds the last bit


def test_a_query_reads_its_hits_clusters_from_the_scan_without_an_id_map(tmp_path, index, embed_model):
    """A query knows each hit's row from the scan, so its nodes carry their cluster without the
    id -> row map (56 MB at 1M), which only writes and lookups by id make."""
    opened = ClusterIndex.open(path=tmp_path / "chroma", embed_model=embed_model)
    found = [opened.as_retriever(similarity_top_k=5, mode=mode).retrieve("croissants") for mode in ("routed", "flat")]
    assert opened.lists._position is None
    for hits in found:
        assert len(hits) == 5
        assert [h.node.metadata["cluster_id"] for h in hits] == [opened.lists.cluster_of(h.node.node_id) for h in hits]
