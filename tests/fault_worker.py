"""A writer process for the fault-injection tests: loops one kind of write on an index and
appends what each write acknowledged to a file (flushed and fsynced) before the next one.

    python -m tests.fault_worker OP STORE ACK_FILE [--host H --port P] [--start N]
"""

from __future__ import annotations

import argparse
import os
import sys

from llama_index.core.schema import Document

from cluster_retriever import ClusterIndex
from cluster_retriever.errors import ConcurrentWriteError

from .hash_embedding import HashEmbedding, text_of


def acknowledge(ack, line: str) -> None:
    ack.write(line + "\n")
    ack.flush()
    os.fsync(ack.fileno())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("op", choices=["add", "delete", "recluster", "build"])
    parser.add_argument("store")
    parser.add_argument("ack")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--start", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=10_000)
    args = parser.parse_args()
    embed = HashEmbedding()
    where = {"host": args.host, "port": args.port} if args.host else {"path": args.store}
    index = ClusterIndex.open(embed_model=embed, max_staleness_s=None, **where)
    acknowledge_file = open(args.ack, "a")
    acknowledge(acknowledge_file, "ready")
    for round_ in range(args.rounds):
        try:
            if args.op == "add":
                ids = [f"w{args.start + round_ * 5 + j}" for j in range(5)]
                index.add([Document(id_=i, text=text_of(int(i[1:]))) for i in ids])
                acknowledge(acknowledge_file, "add " + " ".join(ids))
            elif args.op == "delete":
                victims = [i for i in list(index.lists.ids)[:3]]
                if not victims:
                    break
                index.delete(victims)
                acknowledge(acknowledge_file, "delete " + " ".join(victims))
            elif args.op == "recluster":
                index.recluster(n_clusters=4 + round_ % 3)
                acknowledge(acknowledge_file, "recluster")
            else:
                docs = [Document(id_=f"b{j}", text=text_of(j)) for j in range(200)]
                ClusterIndex.build(docs, embed_model=embed, n_clusters=8, show_progress=False, **where)
                acknowledge(acknowledge_file, "build")
        except ConcurrentWriteError as exc:  # lost a race: nothing applied, say so and go on
            acknowledge(acknowledge_file, f"conflict {exc.__class__.__name__}")
    sys.exit(0)


if __name__ == "__main__":
    main()
