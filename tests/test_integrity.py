"""Damaged stores and input edges: each gives a typed error that says what to do, or works."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from llama_index.core.schema import Document, QueryBundle
from typer.testing import CliRunner

from cluster_retriever import ClusterIndex, ClusterRetriever
from cluster_retriever.cli import app
from cluster_retriever.datasets import iter_beir_corpus
from cluster_retriever.errors import EmptyCorpusError, IndexCorruptedError, InvalidQueryError
from cluster_retriever.store.records import CLUSTER_ID_KEY

from .hash_embedding import HashEmbedding, text_of

runner = CliRunner()


@pytest.fixture
def small(tmp_path):
    docs = [Document(id_=f"d{i}", text=text_of(i)) for i in range(300)]
    index = ClusterIndex.build(docs, path=tmp_path / "store", embed_model=HashEmbedding(), n_clusters=12, show_progress=False)
    yield index
    index.close()


def raw(index, kind: str):
    return index.store.client.get_collection(f"{index.store.name}.g{index.manifest.generation}.{kind}")


def reopen(index, **kwargs):
    return ClusterIndex.open(client=index.store.client, embed_model=HashEmbedding(), **kwargs)


def test_a_node_with_an_unknown_cluster_id_is_routed_by_its_vector(small, caplog):
    raw(small, "assign").update(ids=["d7"], metadatas=[{CLUSTER_ID_KEY: 999}])
    with caplog.at_level("INFO", logger="cluster_retriever"):
        # assignments are read from Chroma when there is no current lists file
        reopened = reopen(small, lists_file=False)
    assert "1 record(s) had no valid cluster" in caplog.text
    assert reopened.lists.cluster_of("d7") == small.lists.cluster_of("d7")
    hits = ClusterRetriever(reopened, similarity_top_k=300).retrieve(text_of(7))
    assert "d7" in {h.node.node_id for h in hits}


def test_a_missing_centroid_or_collection_is_a_typed_error(small):
    raw(small, "centroids").delete(ids=["3"])
    with pytest.raises(IndexCorruptedError, match="11 centroids .* manifest says 12"):
        reopen(small)
    small.store.client.delete_collection(raw(small, "centroids").name)
    with pytest.raises(IndexCorruptedError, match="centroids' of index 'cluster_index' is missing.*Rebuild"):
        reopen(small)


def test_a_damaged_manifest_is_a_typed_error_and_the_cli_says_so(small, tmp_path):
    manifest = small.store.client.get_collection("cluster_index.manifest")
    manifest.add(ids=["v000000000999"], embeddings=[[0.0]], metadatas=[{"dimension": "many"}])
    with pytest.raises(IndexCorruptedError, match="manifest of index 'cluster_index' is damaged"):
        reopen(small)
    small.close()
    result = runner.invoke(app, ["query", "pastry", "--index-path", str(tmp_path / "store")])
    assert result.exit_code == 2 and "damaged" in result.output and "Traceback" not in result.output


def test_a_manifest_of_a_newer_format_asks_for_an_upgrade_whatever_its_fields(small):
    """A newer library may change the manifest's fields (format 4 made the calibration's budgets
    lists): this one says to upgrade, not that the index is damaged."""
    record = small.store.manifests.require().to_record()
    newer = {**record, "format_version": 99, "dimension": "a field of format 99"}
    small.store.client.get_collection("cluster_index.manifest").add(ids=["v000000000999"], embeddings=[[0.0]], metadatas=[newer])
    with pytest.raises(IndexCorruptedError, match="storage format 99, newer than this library understands.*upgrade"):
        reopen(small)


def test_repair_drops_orphan_generations_and_reports_them(small, tmp_path):
    for orphan in (41, 42):
        small.store.client.create_collection(f"cluster_index.g{orphan}.nodes")
    small.close()
    result = runner.invoke(app, ["repair", "--index-path", str(tmp_path / "store")])
    assert result.exit_code == 0 and "dropped 2 orphan generation(s) [41, 42]" in result.output
    reopened = reopen(small)
    assert reopened.store.orphans(reopened.manifest) == []


def test_an_emptied_index_answers_empty_in_every_mode_and_grows_again(small):
    small.delete(list(small.lists.ids))
    assert small.doc_count == 0
    for mode in ("routed", "flat", "strict"):
        assert ClusterRetriever(small, similarity_top_k=5, mode=mode).retrieve("pastry") == []
    small.add([Document(id_="back", text="pastry chef croissant")])
    assert [h.node.node_id for h in ClusterRetriever(small, similarity_top_k=5).retrieve("pastry")] == ["back"]


def test_routed_and_strict_return_k_hits_when_the_index_holds_them(small):
    for mode in ("routed", "strict"):
        hits = ClusterRetriever(small, similarity_top_k=200, mode=mode).retrieve("pastry chef")
        assert len(hits) == 200 and len({h.node.node_id for h in hits}) == 200


def test_bad_query_vectors_and_arguments_fail_at_the_boundary(small):
    retriever = ClusterRetriever(small, similarity_top_k=5)
    for bad in (np.full(32, np.nan), np.full(32, np.inf), np.zeros(32)):
        with pytest.raises(InvalidQueryError, match="NaN, infinite or only zero"):
            retriever.retrieve(QueryBundle(query_str="x", embedding=bad.tolist()))
    with pytest.raises(TypeError, match="list of ids"):
        small.delete("d1")
    with pytest.raises(TypeError, match="list of nodes"):
        small.add(Document(text="one"))
    for bad_k in (2.5, True, 0):
        with pytest.raises(ValueError, match="similarity_top_k must be a positive int"):
            ClusterRetriever(small, similarity_top_k=bad_k)
    with pytest.raises(ValueError, match="n_probe must be a positive int or None"):
        ClusterRetriever(small, n_probe=1.5)
    assert len(ClusterRetriever(small, similarity_top_k=np.int64(3), n_probe=np.int32(2)).retrieve("pastry")) == 3


def test_numpy_ints_are_accepted_and_empty_texts_refused(tmp_path):
    docs = [Document(id_=f"d{i}", text=text_of(i)) for i in range(20)]
    index = ClusterIndex.build(
        docs, path=tmp_path / "a", embed_model=HashEmbedding(), n_clusters=np.int64(3), show_progress=False
    )
    assert index.n_clusters == 3
    with pytest.raises(EmptyCorpusError, match="All 3 documents are empty"):
        ClusterIndex.build([Document(id_=str(i), text="  ") for i in range(3)], path=tmp_path / "b", embed_model=HashEmbedding())


def test_oversized_n_clusters_on_a_folder_fails_before_embedding(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(5):
        (folder / f"{i}.txt").write_text(text_of(i))

    calls = []

    class Counting(HashEmbedding):
        def _get_text_embedding(self, text):
            calls.append(text)
            return super()._get_text_embedding(text)

    with pytest.raises(ValueError, match="larger than the number of documents"):
        ClusterIndex.build(folder, path=tmp_path / "store", embed_model=Counting(), n_clusters=50)
    assert calls == []


def test_beir_null_text_and_title_become_empty_not_none(tmp_path):
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"_id": "1", "title": None, "text": None}) + "\n")
    (doc,) = iter_beir_corpus(tmp_path)
    assert doc.text == "" and doc.metadata["title"] == ""


async def test_concurrent_aretrieve_callers_read_their_own_stats(small):
    retriever = ClusterRetriever(small, similarity_top_k=5, n_probe=2)
    queries = [text_of(i) + f" extra{i % 7}" for i in range(200)]
    expected = {q: retriever.search(q).stats for q in queries}
    assert len({s.vectors_scanned for s in expected.values()}) > 1  # the stats differ by query

    async def one(text):
        await retriever.aretrieve(text)
        return text, retriever.last_stats

    outcomes = await asyncio.gather(*(one(q) for q in queries))
    assert all(stats == expected[text] for text, stats in outcomes)
