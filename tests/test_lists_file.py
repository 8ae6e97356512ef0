"""The memory-mapped lists file: used when current, brought in line by id when stale, ignored
when damaged or written for another collection, never trusted over Chroma."""

from __future__ import annotations

import json

import numpy as np
import pytest
from llama_index.core.schema import Document
from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters

from cluster_retriever import ClusterIndex, SearchParams
from cluster_retriever.embeddings import embed_query
from cluster_retriever.store.chroma import ChromaStore

from .hash_embedding import HashEmbedding, text_of


@pytest.fixture
def built(tmp_path):
    docs = [Document(id_=f"d{i}", text=text_of(i), metadata={"shard": i % 3}) for i in range(400)]
    index = ClusterIndex.build(docs, path=tmp_path / "store", embed_model=HashEmbedding(), n_clusters=16, show_progress=False)
    index.close()
    return tmp_path / "store"


def reopen(path, **kwargs):
    return ClusterIndex.open(path=path, embed_model=HashEmbedding(), **kwargs)


def top_ids(index, i: int, filters=None) -> list[str]:
    params = SearchParams().restricted(filters)
    return index.search(embed_query(index.embed_model, text_of(i)), 10, params, with_nodes=False).ids


def count_vector_reads(monkeypatch) -> list[list[str]]:
    reads: list[list[str]] = []
    original = ChromaStore.iter_data

    def counted(self, data, include):
        if "embeddings" in include and not data.endswith(".centroids"):  # the records' vectors, not k centroids
            reads.append(include)
        return original(self, data, include)

    monkeypatch.setattr(ChromaStore, "iter_data", counted)
    return reads


def header(path) -> dict:
    return json.loads(next((path / "cluster_retriever_lists").glob("cluster_index.g*.float32.json")).read_text())


def test_open_maps_the_file_and_reads_no_vector_from_chroma(built, monkeypatch):
    from_chroma = reopen(built, lists_file=False)
    expected = [top_ids(from_chroma, i) for i in range(0, 400, 37)]
    from_chroma.close()
    reads = count_vector_reads(monkeypatch)
    index = reopen(built)
    assert reads == [] and isinstance(index.lists.vectors.base, np.memmap)  # a view of the mapped file
    assert [top_ids(index, i) for i in range(0, 400, 37)] == expected
    only_shard_1 = MetadataFilters(filters=[MetadataFilter(key="shard", value=1)])  # metadata read on first use
    assert all(int(doc_id[1:]) % 3 == 1 for doc_id in top_ids(index, 5, filters=only_shard_1))


def test_a_stale_file_is_brought_in_line_by_id_and_written_again(built, monkeypatch):
    index = reopen(built)
    index.add([Document(id_="nouveau-é-文", text=text_of(1234))])
    index.delete(["d3"])
    version = index.manifest.version
    index.close()
    assert header(built)["version"] < version  # writes do not rewrite the file
    reads = count_vector_reads(monkeypatch)
    index = reopen(built)
    assert reads == []  # the delta is fetched by id, not the whole collection
    assert "nouveau-é-文" in index.lists and "d3" not in index.lists and len(index) == 400
    assert top_ids(index, 1234)[0] == "nouveau-é-文"
    index.close()
    assert top_ids(reopen(built), 1234)[0] == "nouveau-é-文"  # from the rewritten file: ids are UTF-8 there
    assert header(built)["version"] == version and header(built)["count"] == 400


def test_a_damaged_file_or_one_for_another_collection_is_ignored(built, monkeypatch):
    folder = built / "cluster_retriever_lists"
    vectors = next(folder.glob("*.vectors.npy"))
    vectors.write_bytes(vectors.read_bytes()[:1000])
    reads = count_vector_reads(monkeypatch)
    index = reopen(built)
    assert len(reads) == 1 and len(index) == 400 and top_ids(index, 7)[0] == "d7"
    index.close()
    stored = header(built)
    path = next(folder.glob("cluster_index.g*.float32.json"))
    path.write_text(json.dumps({**stored, "data_uuid": "another-collection"}))
    index = reopen(built)
    assert len(reads) == 2 and top_ids(index, 7)[0] == "d7"


def test_float16_lists_halve_the_file_and_keep_the_ranking(built):
    exact = reopen(built)
    float16 = reopen(built, lists_dtype="float16")
    assert float16.lists.vectors.dtype == np.float16
    files = sorted((built / "cluster_retriever_lists").glob("*.vectors.npy"), key=lambda p: p.stat().st_size)
    assert len(files) == 2 and files[0].stat().st_size < 0.6 * files[1].stat().st_size
    overlap = [len(set(top_ids(exact, i)) & set(top_ids(float16, i))) / 10 for i in range(0, 400, 13)]
    assert np.mean(overlap) >= 0.95


def test_recluster_leaves_only_the_new_generations_files(built):
    index = reopen(built)
    index.recluster(n_clusters=8)
    names = {p.name.split(".")[1] for p in (built / "cluster_retriever_lists").iterdir()}
    assert names == {f"g{index.manifest.generation}"}


def flip(path, at: int, n: int = 64) -> None:
    data = bytearray(path.read_bytes())
    for i in range(at, min(at + n, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("part", ["vectors", "ids", "labels"])
def test_flipped_bytes_in_any_array_are_caught_by_the_checksum(built, monkeypatch, part):
    reference = reopen(built, lists_file=False)
    expected = [top_ids(reference, i) for i in range(0, 400, 7)]
    reference.close()
    path = next((built / "cluster_retriever_lists").glob(f"*.{part}.npy"))
    flip(path, path.stat().st_size - 200)  # inside the data, past the .npy header
    reads = count_vector_reads(monkeypatch)
    index = reopen(built)
    assert len(reads) == 1  # the file was not trusted: Chroma was read, and the file rewritten
    assert [top_ids(index, i) for i in range(0, 400, 7)] == expected


def test_a_renamed_id_in_the_file_is_caught(built):
    path = next((built / "cluster_retriever_lists").glob("*.ids.npy"))
    ids = np.load(path)
    ids[list(ids).index(b"d17")] = b"d71"  # same length, same count: d17's vector now answers as d71
    np.save(path, ids)
    index = reopen(built)
    assert "d17" in index.lists and top_ids(index, 17)[0] == "d17"


@pytest.mark.parametrize("content", ["garbage {", "edited"])
def test_damaged_metadata_never_leaks_nor_crashes(built, content):
    path = next((built / "cluster_retriever_lists").glob("*.meta.json"))
    if content == "edited":  # every document claims shard 1: a valid JSON file, wrong
        rows = json.loads(path.read_text())
        path.write_text(json.dumps([{**row, "shard": 1} for row in rows]))
    else:
        path.write_text(content)
    index = reopen(built)
    only_shard_1 = MetadataFilters(filters=[MetadataFilter(key="shard", value=1)])
    for i in range(0, 400, 11):
        hits = top_ids(index, i, filters=only_shard_1)
        assert len(hits) == 10 and all(int(doc_id[1:]) % 3 == 1 for doc_id in hits)


def test_the_open_checksums_the_file_by_reads_as_the_writer_did_over_the_array(tmp_path):
    """The open reads the file to check it (its pages are not mapped into the process); the sum
    equals the writer's over the array, whatever the header's length, and catches a flipped byte."""
    from cluster_retriever.store.lists_file import _checksum, _file_checksum

    rng = np.random.default_rng(0)
    arrays = {
        "rows": rng.normal(size=(3001, 7)).astype(np.float32),
        "ids": np.char.encode(np.asarray([f"doc-{i}" for i in range(999)]), "utf-8"),
        "empty": np.zeros((0, 4), np.float32),
    }
    for name, array in arrays.items():
        np.save(tmp_path / f"{name}.npy", array)
        assert _file_checksum(np.load(tmp_path / f"{name}.npy", mmap_mode="r")) == _checksum(array)
    raw = bytearray((tmp_path / "rows.npy").read_bytes())
    raw[-5] ^= 0x10  # inside the last row
    (tmp_path / "rows.npy").write_bytes(bytes(raw))
    assert _file_checksum(np.load(tmp_path / "rows.npy", mmap_mode="r")) != _checksum(arrays["rows"])
