import json

import pytest

from cluster_retriever.datasets import iter_documents, iter_text_folder, load_beir

from .conftest import CISI, requires_cisi


def write_beir(folder):
    folder.mkdir()
    (folder / "qrels").mkdir()
    rows = [{"_id": "d1", "title": "Cats", "text": "Cats purr."}, {"_id": "d2", "title": "", "text": "Dogs bark."}]
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (folder / "queries.jsonl").write_text(
        json.dumps({"_id": "q1", "text": "purring"}) + "\n" + json.dumps({"_id": "q2", "text": "x"})
    )
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\n")
    return folder


def test_load_beir_layout(tmp_path):
    data = load_beir(write_beir(tmp_path / "mini"))
    assert [d.doc_id for d in data.corpus] == ["d1", "d2"]
    assert data.corpus[0].text == "Cats\n\nCats purr." and data.corpus[0].metadata["title"] == "Cats"
    assert data.corpus[0].get_content(metadata_mode="embed") == "Cats\n\nCats purr."  # title not twice
    assert data.qrels == {"q1": {"d1": 2}}
    assert data.judged_queries == {"q1": "purring"}


def test_iter_documents_detects_the_layout(tmp_path):
    assert [d.doc_id for d in iter_documents(write_beir(tmp_path / "b"))] == ["d1", "d2"]
    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("Headline A\nBody of a.")
    (folder / "sub" / "b.md").write_bytes(b"Headline B\nbad byte \xff here")
    (folder / "empty.txt").write_text("   ")
    (folder / "image.png").write_bytes(b"\x89PNG")
    docs = list(iter_documents(folder))
    assert [d.doc_id for d in docs] == ["a.txt", "sub/b.md"]
    assert docs[1].metadata["title"] == "Headline B" and "\ufffd" in docs[1].text


def test_text_folder_streams(tmp_path):
    (tmp_path / "a.txt").write_text("one")
    assert next(iter_text_folder(tmp_path)).text == "one"


def test_missing_or_wrong_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="No such folder"):
        list(iter_documents(tmp_path / "missing"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(NotADirectoryError):
        list(iter_documents(tmp_path / "file.txt"))
    with pytest.raises(FileNotFoundError, match="not a BEIR-layout folder"):
        load_beir(tmp_path)


def test_broken_corpus_line_names_the_line(tmp_path):
    folder = write_beir(tmp_path / "b")
    (folder / "corpus.jsonl").write_text('{"_id": "1", "text": "ok"}\n{not json\n')
    with pytest.raises(ValueError, match=r"corpus.jsonl:2"):
        list(iter_documents(folder))


@requires_cisi
def test_cisi_loads():
    data = load_beir(CISI)
    assert len(data.corpus) == 1460 and len(data.judged_queries) == 76
