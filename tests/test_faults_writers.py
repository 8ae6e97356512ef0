"""Fault injection on the index: kill -9 of writers at random points, writers racing
(threads, processes, two clients of one Chroma server) and readers during re-clustering.

Each test checks the contract: every write that returned is in the index afterwards, the
index opens and answers in every mode, ``doc_count`` equals what is stored, readers never
see an error. The figures (runs, kills, acknowledged writes, losses, reader errors) are
written to runs/faults/writers.json.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from llama_index.core.schema import Document

from cluster_retriever import ClusterIndex, ClusterRetriever
from cluster_retriever.errors import IndexLockedError

from .chroma_server import chroma_server
from .hash_embedding import HashEmbedding, text_of

pytestmark = [pytest.mark.faults, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
FIGURES: Counter[str] = Counter()
WORST: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def figures():
    yield
    out = REPO / "runs" / "faults"
    out.mkdir(parents=True, exist_ok=True)
    (out / "writers.json").write_text(json.dumps({**FIGURES, **WORST}, indent=2, sort_keys=True))


def base_docs(n: int = 200) -> list[Document]:
    return [Document(id_=f"b{j}", text=text_of(j)) for j in range(n)]


def build(where: dict, n: int = 200) -> ClusterIndex:
    """Build, then let other processes have the store (an embedded store has one writer process)."""
    index = ClusterIndex.build(base_docs(n), embed_model=HashEmbedding(), n_clusters=8, show_progress=False, **where)
    index.close()
    return index


def start_worker(op: str, ack: Path, where: dict, start: int = 100_000, rounds: int = 10_000) -> subprocess.Popen:
    command = [sys.executable, "-m", "tests.fault_worker", op, str(where.get("path", "-")), str(ack), "--start", str(start)]
    command += ["--rounds", str(rounds)]
    if "host" in where:
        command += ["--host", where["host"], "--port", str(where["port"])]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (ack.exists() and "ready" in ack.read_text()):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker did not start: {process.stderr.read().decode()[-2000:]}")
        time.sleep(0.05)
    return process


def acknowledged(ack: Path) -> tuple[set[str], set[str]]:
    added, deleted = set(), set()
    for line in ack.read_text().splitlines():
        op, *ids = line.split()
        if op == "add":
            added.update(ids)
            deleted.difference_update(ids)
        elif op == "delete":
            deleted.update(ids)
            added.difference_update(ids)
    return added, deleted


def check_index(where: dict, added: set[str], deleted: set[str], base: set[str]) -> ClusterIndex:
    """Opens, answers in every mode, holds every acknowledged add and no acknowledged delete."""
    index = ClusterIndex.open(embed_model=HashEmbedding(), **where)
    stored = set(index.lists.ids)
    lost = (added - stored) | (deleted & stored)
    FIGURES["acknowledged_writes"] += len(added) + len(deleted)
    FIGURES["acknowledged_writes_lost"] += len(lost)
    assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {sorted(lost)[:5]}"
    assert index.doc_count == index.store.count(index.manifest.data_collection) == len(stored)
    assert stored <= base | added | {f"w{i}" for i in range(100_000, 200_000)}
    for mode in ("routed", "flat", "strict"):
        hits = ClusterRetriever(index, similarity_top_k=10, mode=mode).retrieve("pastry chef croissant")
        assert len(hits) == min(10, len(stored)) and len({h.node.node_id for h in hits}) == len(hits)
    return index


@pytest.mark.parametrize("op", ["add", "delete", "recluster", "build"])
def test_kill_minus_nine_at_random_points_loses_no_acknowledged_write(tmp_path, op):
    rng = random.Random(f"kill-{op}")
    for run in range(3):
        where = {"path": str(tmp_path / f"store-{run}")}
        build(where)
        ack = tmp_path / f"ack-{run}.txt"
        worker = start_worker(op, ack, where)
        time.sleep(rng.uniform(0.3, 2.5))
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        FIGURES["kill_runs"] += 1
        FIGURES[f"kills_during_{op}"] += 1
        added, deleted = acknowledged(ack)
        index = check_index(where, added, deleted, {f"b{j}" for j in range(200)})
        if op == "add":  # the write the kill interrupted can be run again (idempotent)
            next_round = len([line for line in ack.read_text().splitlines() if line.startswith("add")])
            retry = [
                Document(id_=f"w{100_000 + next_round * 5 + j}", text=text_of(100_000 + next_round * 5 + j)) for j in range(5)
            ]
            index.add(retry)
            assert all(doc.doc_id in index.lists for doc in retry)
        report = index.repair()  # generations of killed builds and reclusters
        FIGURES["orphan_generations_repaired"] += len(report["orphan_generations_dropped"])
        assert index.store.orphans(index.manifest) == []
        index.close()


def test_threads_racing_on_one_path_lose_nothing(tmp_path):
    where = {"path": str(tmp_path / "store")}
    build(where)
    writer, recluster = (ClusterIndex.open(embed_model=HashEmbedding(), **where) for _ in range(2))
    reader = ClusterRetriever(writer, similarity_top_k=10)
    added: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def add_loop():
        for round_ in range(30):
            ids = [f"w{100_000 + round_ * 5 + j}" for j in range(5)]
            writer.add([Document(id_=i, text=text_of(int(i[1:]))) for i in ids])
            added.extend(ids)

    def recluster_loop():
        for round_ in range(4):
            recluster.recluster(n_clusters=6 + round_)

    def read_loop():
        while not stop.is_set():
            try:
                assert len(reader.retrieve("spark etl pipeline")) == 10
                FIGURES["reader_queries"] += 1
            except BaseException as exc:  # counted, then asserted to be none
                errors.append(exc)

    threads = [threading.Thread(target=f) for f in (add_loop, recluster_loop)]
    readers = [threading.Thread(target=read_loop) for _ in range(2)]
    for thread in threads + readers:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    for thread in readers:
        thread.join()
    FIGURES["thread_races"] += 1
    FIGURES["reader_errors"] += len(errors)
    assert not errors, errors[:3]
    check_index(where, set(added), set(), {f"b{j}" for j in range(200)})


def test_adds_during_a_recluster_of_the_same_object_use_the_new_centroids(tmp_path):
    """Finding 2: an add racing a recluster on one object assigned clusters with the old
    centroids and broke every routed query. Now the add takes the lock first."""
    where = {"path": str(tmp_path / "store")}
    index = build(where, 300)
    added: list[str] = []

    def add_loop():
        for round_ in range(20):
            ids = [f"w{100_000 + round_ * 5 + j}" for j in range(5)]
            index.add([Document(id_=i, text=text_of(int(i[1:]))) for i in ids])
            added.extend(ids)

    thread = threading.Thread(target=add_loop)
    thread.start()
    for round_ in range(3):
        index.recluster(n_clusters=5 + round_)
    thread.join()
    FIGURES["thread_races"] += 1
    assert all(0 <= index.lists.cluster_of(i) < index.n_clusters for i in added)
    for probe in (1, 2, None):
        assert len(ClusterRetriever(index, similarity_top_k=10, n_probe=probe).retrieve("pastry chef")) == 10
    check_index(where, set(added), set(), {f"b{j}" for j in range(300)})


def test_two_threads_adding_the_same_ids_store_them_once(tmp_path):
    where = {"path": str(tmp_path / "store")}
    build(where, 100)
    a, b = (ClusterIndex.open(embed_model=HashEmbedding(), **where) for _ in range(2))
    docs = [Document(id_=f"same{i}", text=text_of(i)) for i in range(300)]
    threads = [threading.Thread(target=index.add, args=(docs,)) for index in (a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    FIGURES["thread_races"] += 1
    reopened = ClusterIndex.open(embed_model=HashEmbedding(), **where)
    assert reopened.doc_count == 400 == reopened.store.count(reopened.manifest.data_collection)
    assert len(set(reopened.lists.ids)) == 400


def test_readers_during_recluster_of_the_same_object_never_fail(tmp_path):
    where = {"path": str(tmp_path / "store")}
    index = build(where, 400)
    errors: list[BaseException] = []
    stop = threading.Event()

    def read_loop():
        retriever = ClusterRetriever(index, similarity_top_k=5)
        while not stop.is_set():
            try:
                assert len(retriever.retrieve("tax invoice ledger")) == 5
                FIGURES["reader_queries"] += 1
            except BaseException as exc:
                errors.append(exc)

    readers = [threading.Thread(target=read_loop) for _ in range(3)]
    for thread in readers:
        thread.start()
    for round_ in range(5):
        index.recluster(n_clusters=5 + round_)
    stop.set()
    for thread in readers:
        thread.join()
    FIGURES["reclusters_under_readers"] += 5
    FIGURES["reader_errors"] += len(errors)
    assert not errors, errors[:3]
    assert index.store.orphans(index.manifest) == []  # old generations dropped once unread


def test_a_second_process_is_refused_while_one_writes_an_embedded_store(tmp_path):
    """Chroma's embedded client caches segments per process: a process that reads while
    another writes fails with 'Error finding id', two writers corrupt the store. So while a
    process writes, other processes are refused, reading or writing, with a clear error."""
    where = {"path": str(tmp_path / "store")}
    build(where)
    ack = tmp_path / "ack.txt"
    worker = start_worker("add", ack, where)
    try:
        while "add" not in ack.read_text():
            time.sleep(0.05)
        with pytest.raises(IndexLockedError, match="Chroma server"):
            ClusterIndex.open(embed_model=HashEmbedding(), lock_timeout_s=0.5, **where)
        FIGURES["process_opens_refused"] += 1
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    added, deleted = acknowledged(ack)
    index = check_index(where, added, deleted, {f"b{j}" for j in range(200)})
    index.add([Document(id_="after", text="pastry")])  # the lock died with the worker
    assert "after" in index.lists


def test_a_reader_process_keeps_writers_out_until_it_closes(tmp_path):
    where = {"path": str(tmp_path / "store")}
    build(where)
    reader = ClusterIndex.open(embed_model=HashEmbedding(), **where)
    ack = tmp_path / "ack.txt"
    worker = start_worker("add", ack, where, rounds=1)
    assert worker.wait(timeout=120) != 0 and b"IndexLockedError" in worker.stderr.read()
    FIGURES["process_writes_refused"] += 1
    reader.close()
    ack.unlink()
    worker = start_worker("add", ack, where, rounds=1)
    assert worker.wait(timeout=120) == 0 and "add" in ack.read_text()


@pytest.mark.server
def test_a_stale_handle_follows_a_rebuild_by_another_client(tmp_path):
    with chroma_server(tmp_path / "server") as port:
        where = {"host": "127.0.0.1", "port": port}
        build(where, 60)
        reader = ClusterIndex.open(embed_model=HashEmbedding(), max_staleness_s=None, **where)
        before = reader.manifest.generation
        worker = start_worker("build", tmp_path / "ack.txt", where, rounds=1)
        assert worker.wait(timeout=120) == 0
        # the old generation is gone: the query notices, reloads and answers from the new one
        hits = ClusterRetriever(reader, similarity_top_k=5).retrieve("pastry chef croissant")
        assert reader.manifest.generation > before and len(hits) == 5
        assert reader.doc_count == 200


@pytest.mark.server
def test_two_clients_of_one_server_racing_lose_nothing(tmp_path):
    with chroma_server(tmp_path / "server") as port:
        where = {"host": "127.0.0.1", "port": port}
        build(where)
        acks = [tmp_path / f"ack-{i}.txt" for i in range(3)]
        workers = [
            start_worker("add", acks[0], where, start=100_000),
            start_worker("add", acks[1], where, start=150_000),
            start_worker("recluster", acks[2], where),
        ]
        time.sleep(8)
        for worker in workers:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
        FIGURES["server_client_races"] += 1
        added = set().union(*(acknowledged(ack)[0] for ack in acks[:2]))
        conflicts = sum(line.startswith("conflict") for ack in acks for line in ack.read_text().splitlines())
        FIGURES["server_conflicts_retried_or_refused"] += conflicts
        assert len(added) > 0
        index = check_index(where, added, set(), {f"b{j}" for j in range(200)})
        assert np.all(np.isin(list(added), index.lists.ids))
