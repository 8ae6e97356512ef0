import pytest
from typer.testing import CliRunner

from cluster_retriever.cli import app

pytestmark = pytest.mark.slow
runner = CliRunner()


def test_build_query_info(tmp_path, text_folder):
    docs = text_folder
    store = ["--index-path", str(tmp_path / "chroma")]
    built = runner.invoke(app, ["build", str(docs), *store, "--n-clusters", "2"])
    assert built.exit_code == 0, built.output
    assert "8 documents in 2 clusters" in built.output
    found = runner.invoke(app, ["query", "who bakes croissants", *store, "--top-k", "2"])
    assert found.exit_code == 0, found.output
    assert "chef" in found.output and "eng0" not in found.output and "scanned" in found.output
    shown = runner.invoke(app, ["info", *store, "--terms", "8"])
    assert shown.exit_code == 0, shown.output
    assert "croissants" in shown.output and "spark" in shown.output.lower()
    (tmp_path / "questions.txt").write_text("who bakes croissants\nwho runs Spark pipelines\n")
    tuned = runner.invoke(app, ["tune", str(tmp_path / "questions.txt"), *store, "--top-k", "4", "--target", "1.0"])
    assert tuned.exit_code == 0, tuned.output
    assert "default" in tuned.output and "recall@4" in tuned.output


def test_errors_are_clear_and_exit_nonzero(tmp_path, text_folder):
    store = ["--index-path", str(tmp_path / "chroma")]
    missing = runner.invoke(app, ["build", str(tmp_path / "missing"), *store])
    assert missing.exit_code == 2 and "No such folder" in missing.output
    empty = runner.invoke(app, ["query", "x", *store])
    assert empty.exit_code == 2 and "No cluster index" in empty.output
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    on_a_file = runner.invoke(app, ["build", str(text_folder), "--index-path", str(a_file)])
    assert on_a_file.exit_code == 2 and "file, not a folder" in " ".join(on_a_file.output.split())


def test_adopt_list_and_query_an_apps_collection_with_a_filter(tmp_path, embed_model):
    import chromadb
    from llama_index.core import Document, StorageContext, VectorStoreIndex
    from llama_index.vector_stores.chroma import ChromaVectorStore

    folder = tmp_path / "app"
    chroma = ChromaVectorStore(chroma_collection=chromadb.PersistentClient(path=str(folder)).get_or_create_collection("app_docs"))
    docs = [
        Document(id_=f"{team}-{i}", text=f"{text} Note {i}.", metadata={"team": team, "year": 2020 + i})
        for team, text in [("bakery", "Laminating croissant dough with butter."), ("data", "Spark ETL pipelines in Airflow.")]
        for i in range(4)
    ]
    VectorStoreIndex.from_documents(
        docs, storage_context=StorageContext.from_defaults(vector_store=chroma), embed_model=embed_model
    )
    store = ["--index-path", str(folder)]
    listed = runner.invoke(app, ["list", *store])
    assert listed.exit_code == 0 and "app_docs" in listed.output and "adopt" in listed.output
    missing = runner.invoke(app, ["query", "croissants", *store])
    assert missing.exit_code == 2 and "it holds none" in " ".join(missing.output.split())
    adopted = runner.invoke(app, ["adopt", "app_docs", *store])
    assert adopted.exit_code == 0, adopted.output
    assert "8 documents" in adopted.output and "app_docs-clusters" in adopted.output
    wrong_name = runner.invoke(app, ["query", "croissants", *store])
    assert wrong_name.exit_code == 2 and "app_docs-clusters" in wrong_name.output  # the error names the index there
    named = ["--name", "app_docs-clusters"]
    found = runner.invoke(app, ["query", "croissant dough", *store, *named, "--filter", "team=data", "--top-k", "3"])
    assert found.exit_code == 0, found.output
    assert "data-" in found.output and "bakery-" not in found.output  # document ids, and only the team asked for
    by_year = runner.invoke(app, ["query", "croissant dough", *store, *named, "--filter", "year=2021", "--top-k", "3"])
    assert by_year.exit_code == 0 and "bakery-1" in by_year.output and "bakery-0" not in by_year.output
    bad = runner.invoke(app, ["query", "x", *store, *named, "--filter", "team"])
    assert bad.exit_code == 2 and "key=value" in bad.output
    unknown = runner.invoke(app, ["adopt", "nope", *store])
    assert unknown.exit_code == 2 and "app_docs" in unknown.output


def test_import_and_help_load_nothing_heavy_and_leave_the_environment():
    import subprocess
    import sys

    probe = (
        "import os, sys, time\n"
        "before = dict(os.environ)\n"
        "import cluster_retriever, cluster_retriever.cli\n"
        "heavy = [m for m in ('chromadb', 'sklearn', 'sentence_transformers', 'litellm', 'torch') if m in sys.modules]\n"
        "print(heavy, dict(os.environ) == before)\n"
    )
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert shown.stdout.split("\n")[0] == "[] True", shown.stderr
    helped = subprocess.run([sys.executable, "-m", "cluster_retriever.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert "adopt" in helped.stdout and "list" in helped.stdout
