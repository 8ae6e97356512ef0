"""Records read straight from an embedded Chroma's file (``store.chroma_file``): exactly what
Chroma's own ``get`` gives, never staler, and read through Chroma whenever that cannot be
vouched for (the log ahead of the segment, list-valued metadata, a writer holding the file, an
unknown layout, clients without a file)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import chromadb
import numpy as np
import pytest
from llama_index.core import Document
from llama_index.core.vector_stores.types import VectorStoreQuery
from llama_index.vector_stores.chroma import ChromaVectorStore

from cluster_retriever import ClusterIndex, ClusterVectorStore, SearchParams
from cluster_retriever.store.chroma import ChromaStore
from cluster_retriever.store.chroma_file import ChromaFile

from .hash_embedding import HashEmbedding, text_of
from .test_filters import TENANTS, node, tenant_is

REPO = Path(__file__).resolve().parents[1]
METADATAS = [
    {"s": "a", "i": 3, "f": 2.5, "yes": True, "no": False, "empty": "", "u": "ünï 🎉", "neg": -7, "big": 2**40, "zero": 0.0},
    None,
    {"x": 1},
    {"only": "m", "one": 1.0},
]
DOCUMENTS = ["doc one", "doc two", None, ""]


def chromas_get(collection, ids, documents=True) -> dict:
    """Chroma's own answer, in the store's shape."""
    found = collection.get(ids=ids, include=["documents", "metadatas"] if documents else ["metadatas"])
    texts = found["documents"] if documents else [""] * len(found["ids"])
    return {i: (d or "", m or {}) for i, d, m in zip(found["ids"], texts, found["metadatas"], strict=True)}


@pytest.fixture
def folder(tmp_path):
    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    collection = client.create_collection("records")
    vectors = np.random.default_rng(0).random((4, 3)).tolist()
    collection.add(ids=["a", "b", "c", "d"], embeddings=vectors, documents=DOCUMENTS, metadatas=METADATAS)
    return tmp_path / "db", client, collection


def test_direct_reads_give_exactly_what_chromas_get_gives(folder):
    path, client, collection = folder
    file = ChromaFile.open(path, str(collection.id))
    assert file is not None
    ids = ["a", "b", "c", "d", "missing"]
    for documents in (True, False):
        found = file.records(ids, documents)
        assert found == chromas_get(collection, ids, documents)
        assert {type(v) for v in found["a"][1].values()} == {str, int, float, bool}
    assert [type(found["a"][1][k]) for k in ("yes", "i", "zero")] == [bool, int, float]

    collection.update(ids=["a"], metadatas=[{"s": "changed"}])  # merged into the old metadata
    collection.upsert(ids=["b"], embeddings=[[0.5, 0.5, 0.5]], documents=["rewritten"], metadatas=[{"t": "x"}])
    collection.delete(ids=["c"])
    assert file.records(ids) == chromas_get(collection, ids)
    assert file.records(ids)["a"][1]["s"] == "changed" and "c" not in file.records(ids)
    many = [f"m{i}" for i in range(1200)]  # more ids than one statement binds
    collection.add(ids=many, embeddings=np.random.default_rng(1).random((1200, 3)).tolist(), documents=many)
    assert file.records(many + ids) == chromas_get(collection, many + ids)
    assert file.count() == collection.count() == 1203
    assert ChromaStore(client, "idx").count("records") == 1203
    for include in ([], ["metadatas"], ["documents"], ["documents", "metadatas"]):  # every record, Chroma's order
        page = file.everything("documents" in include, "metadatas" in include)
        assert page == {key: value for key, value in collection.get(include=include).items() if key in ["ids", *include]}
        assert list(ChromaStore(client, "idx").iter_data("records", include)) == [page]


def test_the_count_is_read_again_only_when_the_file_changed_and_then_follows_every_write(folder, monkeypatch):
    path, client, collection = folder
    file = ChromaFile.open(path, str(collection.id))
    reads = []
    real = file._vouched_at
    monkeypatch.setattr(file, "_vouched_at", lambda read: reads.append(1) or real(read))
    assert [file.count() for _ in range(5)] == [4] * 5 and len(reads) == 1  # the file unchanged: no statement run
    other = chromadb.PersistentClient(path=str(path)).get_collection("records")  # the app's other handle writes
    other.add(ids=["e"], embeddings=[[0.1, 0.2, 0.3]])
    assert file.count() == collection.count() == 5 and len(reads) == 2
    other.delete(ids=["a", "b"])
    assert file.count() == 3 and file.count() == 3 and len(reads) == 3
    other.update(ids=["c"], metadatas=[{"x": 2}])  # a write that keeps the count still reads it again
    assert file.count() == 3 and len(reads) == 4

    checks = []  # the segment's checks (applied the log? list metadata?): once per state of the file
    check = file._current_segment
    monkeypatch.setattr(file, "_current_segment", lambda connection: checks.append(1) or check(connection))
    assert [file.records(["c"])["c"][1] for _ in range(3)] == [{"x": 2}] * 3 and not checks  # made by the count
    other.update(ids=["c"], metadatas=[{"x": 3}])
    assert file.records(["c"])["c"][1] == {"x": 3} and file.records(["c"])["c"][1] == {"x": 3} and len(checks) == 1
    other.add(ids=["listy"], embeddings=[[0.1, 0.2, 0.3]], metadatas=[{"tags": [1, 2]}])  # seen at the next state
    assert file.records(["listy"]) is None and file.records(["c"])["c"][1] == {"x": 3} and len(checks) == 2


def test_the_store_reads_hits_from_the_file_and_falls_back_to_chroma_when_it_cannot_vouch(folder, monkeypatch):
    path, client, collection = folder
    store = ChromaStore(client, "idx")
    file = store._file("records")
    assert file is not None
    calls = []
    real = file.records
    monkeypatch.setattr(file, "records", lambda *a, **k: calls.append(real(*a, **k)) or calls[-1])
    assert store.fetch("records", ["a", "b"]) == chromas_get(collection, ["a", "b"]) and calls[-1] is not None

    collection.add(ids=["listy"], embeddings=[[0.1, 0.2, 0.3]], metadatas=[{"tags": [3, 1, 2]}])
    assert store.fetch("records", ["listy", "a"]) == chromas_get(collection, ["listy", "a"])  # Chroma orders lists
    assert calls[-1] is None and store.fetch("records", ["listy"])["listy"][1]["tags"] == [3, 1, 2]
    assert file.everything(documents=False, metadatas=True) is None  # the whole read falls back too
    assert list(store.iter_data("records", ["metadatas"])) == [collection.get(include=["metadatas"])]

    with sqlite3.connect(path / "chroma.sqlite3") as raw:  # the segment behind the log: a write not yet applied
        (segment, applied) = raw.execute(
            "SELECT s.id, m.seq_id FROM segments s JOIN max_seq_id m ON m.segment_id = s.id "
            "WHERE s.collection = ? AND s.scope = 'METADATA'",
            (str(collection.id),),
        ).fetchone()
        raw.execute("UPDATE max_seq_id SET seq_id = ? WHERE segment_id = ?", (applied - 1, segment))
    assert real(["a"]) is None and file.count() is None and store.count("records") == collection.count()
    with sqlite3.connect(path / "chroma.sqlite3") as raw:
        raw.execute("UPDATE max_seq_id SET seq_id = ? WHERE segment_id = ?", (applied, segment))
    assert real(["a"]) == chromas_get(collection, ["a"])

    writer = sqlite3.connect(path / "chroma.sqlite3", isolation_level=None)  # a write in progress: its journal exists
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE collections SET name = name")
    assert Path(f"{path / 'chroma.sqlite3'}-journal").exists()
    assert real(["a"]) is None and file.count() is None
    assert store.fetch("records", ["b"]) == chromas_get(collection, ["b"])
    writer.execute("ROLLBACK")
    writer.close()
    assert real(["a"]) == chromas_get(collection, ["a"])

    read = ChromaFile._records  # a commit that lands while the rows are read: the change counter moves
    monkeypatch.setattr(ChromaFile, "_records", lambda *a: (read(*a), collection.update(ids=["d"], metadatas=[{"n": 1}]))[0])
    assert real(["a"]) is None
    monkeypatch.setattr(ChromaFile, "_records", read)
    assert real(["a", "d"]) == chromas_get(collection, ["a", "d"])


def test_clients_without_a_known_file_read_through_chroma(tmp_path):
    memory = ChromaStore(chromadb.EphemeralClient(), "idx")
    memory.client.get_or_create_collection("records").add(ids=["a"], embeddings=[[1.0, 0.0]], documents=["x"])
    assert memory._file("records") is None and memory.fetch("records", ["a"]) == {"a": ("x", {})}
    other = tmp_path / "other"
    other.mkdir()
    with sqlite3.connect(other / "chroma.sqlite3") as raw:
        raw.execute("CREATE TABLE embeddings (id INTEGER PRIMARY KEY, vector BLOB)")
    assert ChromaFile.open(other, "0" * 36) is None  # another layout
    assert ChromaFile.open(tmp_path / "nowhere", "0" * 36) is None


def test_windows_reads_through_chroma(folder, monkeypatch):
    path, _, collection = folder
    with monkeypatch.context() as patched:
        patched.setattr(os, "name", "nt")
        unreadable = ChromaFile.open(path, str(collection.id))
    assert unreadable is None and ChromaFile.open(path, str(collection.id)) is not None


def test_a_file_in_wal_mode_reads_through_chroma(folder, tmp_path):
    """WAL commits do not bump the change counter the unlocked read is checked by."""
    path, _, collection = folder
    copy = tmp_path / "wal"
    copy.mkdir()
    shutil.copy(path / "chroma.sqlite3", copy / "chroma.sqlite3")
    file = ChromaFile.open(copy, str(collection.id))
    assert file is not None and file.records(["a"]) == chromas_get(collection, ["a"])
    raw = sqlite3.connect(copy / "chroma.sqlite3")
    assert raw.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    assert file.records(["a"]) is None
    raw.close()
    (copy / "chroma.sqlite3").rename(copy / "moved.sqlite3")  # the file gone: through Chroma, no error
    assert file.records(["a"]) is None and file.count() is None


MOVE = """
import chromadb
from llama_index.core.vector_stores.utils import node_to_metadata_dict
from tests.test_filters import node
from tests.hash_embedding import HashEmbedding
moved = node({i}, "globex", embed=HashEmbedding())
collection = chromadb.PersistentClient(path={folder!r}).get_collection("tenants")
metadata = node_to_metadata_dict(moved, remove_text=True, flat_metadata=True)
collection.upsert(ids=[moved.node_id], embeddings=[moved.embedding], documents=[moved.text], metadatas=[metadata])
"""


@pytest.mark.faults
def test_a_tenant_change_written_by_another_process_is_excluded_by_the_next_filtered_query(tmp_path):
    """The app's own ingestion job moves a record to another tenant from another process; this
    process's index does not look (no staleness check): only the hits' read can see it."""
    embed = HashEmbedding()
    folder = str(tmp_path / "app")
    chroma = ChromaVectorStore(chroma_collection=chromadb.PersistentClient(path=folder).get_or_create_collection("tenants"))
    chroma.add([node(i, TENANTS[i % 3], embed=embed) for i in range(300)])
    store = ClusterVectorStore.from_chroma(
        chroma, embed_model=embed, n_clusters=10, show_progress=False, max_staleness_s=None,
        search_params=SearchParams(exact_scan_max_floats=0),
    )  # fmt: skip
    query = VectorStoreQuery(
        query_embedding=embed.get_query_embedding(text_of(0)), similarity_top_k=10, filters=tenant_is("acme")
    )
    assert store.query(query).ids[0] == "n0"

    done = subprocess.run([sys.executable, "-c", MOVE.format(i=0, folder=folder)], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]

    for _ in range(3):
        result = store.query(query)
        assert "n0" not in result.ids and len(result.ids) == 10
        assert all(n.metadata["tenant"] == "acme" for n in result.nodes)


def rewrite(path: str, writes: int) -> None:
    """Chroma rewrites 40 records ``writes`` times, each write giving them all the same ``t``
    and ``u`` and a text made of ``t`` (run in a thread of the test, or in another process)."""
    collection = chromadb.PersistentClient(path=path).get_collection("records")
    rng = np.random.default_rng(1)
    ids = [f"r{j}" for j in range(40)]
    for i in range(writes):
        metadata = {"t": i, "u": i, "pad": "x" * 300}
        collection.upsert(
            ids=ids, embeddings=rng.random((40, 3)).tolist(), documents=[f"v{i}" * 50] * 40, metadatas=[metadata] * 40
        )


@pytest.mark.faults
@pytest.mark.parametrize("writer", ["thread", "process"])
def test_reads_racing_chromas_own_writes_are_whole_or_refused_and_never_hurt_them(folder, writer):
    """Chroma rewrites 40 records again and again (in this process, or another), each write
    giving every record the same ``t`` and ``u`` and a text made of ``t``; direct reads run
    meanwhile. Every read kept is one consistent state, and Chroma's writes all land."""
    path, client, collection = folder
    file = ChromaFile.open(path, str(collection.id))
    writes, ids = 150, [f"r{j}" for j in range(40)]
    if writer == "thread":
        errors: list[BaseException] = []

        def write() -> None:
            try:
                rewrite(str(path), writes)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        thread = threading.Thread(target=write)
        thread.start()
        running = thread.is_alive
    else:
        process = subprocess.Popen(
            [sys.executable, "-c", f"from tests.test_chroma_file import rewrite; rewrite({str(path)!r}, {writes})"],
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
        )
        running = lambda: process.poll() is None  # noqa: E731
    kept = refused = 0
    while running():
        found = file.records(ids)
        if found is None:
            refused += 1
            continue
        kept += 1
        states = {(meta["t"], meta["u"], text) for text, meta in found.values()}
        assert len(found) in (0, 40) and all(t == u and text == f"v{t}" * 50 for t, u, text in states), states
        assert len(states) <= 1  # one write's state, never two mixed
    if writer == "thread":
        thread.join()
        assert not errors, errors
    else:
        assert process.wait() == 0, process.stderr.read()[-2000:]
    assert kept > 0  # the race was run through the direct path, not only refused
    assert collection.count() == 44 and file.records(["r0"])["r0"][1]["t"] == writes - 1
    check = sqlite3.connect(f"{(path / 'chroma.sqlite3').as_uri()}?mode=ro", uri=True)
    assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.parametrize("kind", ["persistent", "in-memory"])
def test_a_querys_staleness_check_reads_nothing_while_the_file_is_unchanged_and_sees_the_apps_next_write(
    kind, tmp_path, monkeypatch
):
    client = chromadb.PersistentClient(path=str(tmp_path / "db")) if kind == "persistent" else chromadb.EphemeralClient()
    docs = [Document(id_=f"d{i}", text=text_of(i), metadata={"tenant": "acme"}) for i in range(60)]
    index = ClusterIndex.build(docs, client=client, name=f"fresh-{kind}", embed_model=HashEmbedding(), show_progress=False)
    live = index._live
    reads = []
    real = live.store.manifests.read
    monkeypatch.setattr(live.store.manifests, "read", lambda: reads.append(1) or real())
    for _ in range(4):
        live.refresh_if_moved()
    # embedded: the first check reads, the rest find the file unchanged; in memory: every check reads
    assert len(reads) == (1 if kind == "persistent" else 4)

    app = client.get_collection(index.manifest.data_collection)  # the app's own write, outside the library
    app.add(ids=["app-1"], embeddings=index.lists.vectors[:1].tolist(), documents=["written by the app"])
    before = len(reads)
    live.refresh_if_moved()
    assert len(reads) > before and "app-1" in list(index.lists.ids)
    live.refresh_if_moved()  # the first check after the sync reads; embedded, the next ones do not
    after = len(reads)
    live.refresh_if_moved()
    assert len(reads) == (after if kind == "persistent" else after + 1)
    index.close()
