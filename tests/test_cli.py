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
