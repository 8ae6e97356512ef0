import os

for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "RAGAS_DO_NOT_TRACK": "true",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_key, _value)

import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

# Lists files of server-backed test indexes go to a throwaway cache, not the user's ~/.cache.
os.environ.setdefault("CLUSTER_RETRIEVER_CACHE", tempfile.mkdtemp(prefix="cluster-retriever-test-cache-"))

import pytest  # noqa: E402
from llama_index.core.schema import Document  # noqa: E402

CISI = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cisi"
# Outside CI a checkout may lack ../shared; in CI the data is there and these tests must run.
requires_cisi = pytest.mark.skipif(
    not CISI.exists() and not os.environ.get("CI"), reason="../shared/datasets/cisi is not beside this checkout"
)

GUARD_DATASETS_ENV = "CLUSTER_RETRIEVER_GUARD_DATASETS"


def pytest_addoption(parser):
    parser.addoption(
        "--guard-dataset",
        action="append",
        default=[],
        help=f"a BEIR-layout folder to run the quality guard on as well (repeatable; or {GUARD_DATASETS_ENV}=A:B)",
    )


def guard_datasets(config) -> list[str]:
    """Folders passed in for the quality guard, checked here so a typo fails loudly."""
    folders = list(config.getoption("--guard-dataset")) + [
        p for p in os.environ.get(GUARD_DATASETS_ENV, "").split(os.pathsep) if p
    ]
    for folder in folders:
        if not (Path(folder) / "corpus.jsonl").exists():
            raise pytest.UsageError(f"--guard-dataset {folder}: no corpus.jsonl there (a BEIR-layout folder is needed)")
    return folders


ROLES = {
    "pmm": "Product marketing manager: owns positioning, messaging, pricing pages and go-to-market launches.",
    "pm": "Product manager: owns the roadmap, writes user stories, prioritises the backlog with engineering.",
    "de": "Data engineer: builds ETL pipelines with Spark and Airflow and models the data warehouse.",
    "chef": "Pastry chef: bakes croissants, laminates dough and plates desserts for the restaurant.",
}


def make_docs(per_role: int = 5) -> list[Document]:
    return [
        Document(id_=f"{role}-{i}", text=f"{text} Profile number {i}.", metadata={"role": role})
        for role, text in ROLES.items()
        for i in range(per_role)
    ]


@pytest.fixture(scope="session")
def embed_model():
    from cluster_retriever.embeddings import resolve_embed_model

    return resolve_embed_model()


@pytest.fixture
def docs() -> list[Document]:
    return make_docs()


@pytest.fixture
def index(tmp_path, embed_model, docs):
    from cluster_retriever import ClusterIndex

    return ClusterIndex.build(docs, path=tmp_path / "chroma", embed_model=embed_model, n_clusters=4, show_progress=False)


@pytest.fixture
def text_folder(tmp_path) -> Path:
    """Four pastry-chef and four data-engineer profiles, one text file each (first line: title)."""
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(4):
        (folder / f"chef{i}.txt").write_text(f"Pastry chef {i}\nLaminates croissant dough, bakes croissants and plates desserts.")
        (folder / f"eng{i}.txt").write_text(f"Data engineer {i}\nBuilds Spark ETL pipelines and Airflow jobs.")
    return folder
