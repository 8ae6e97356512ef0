"""The manifest: what an index was built with and which generation is live, kept as an
append-only log of versions in ``<name>.manifest``.

Every write commits the next manifest version by inserting the record ``v<version+1>``.
Chroma keeps the first record written under an id and ignores later ones, so the insert is a
compare-and-swap: of two writers that read the same version, exactly one commits and the
other gets ``ConcurrentWriteError``. Generation numbers are claimed the same way (``g<N>``).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator

from cluster_retriever.errors import ConcurrentWriteError, IndexCorruptedError, IndexNotFoundError
from cluster_retriever.store.clients import ClientAPI, index_names, is_missing_collection

FORMAT_VERSION = 4  # 4: calibration budgets per bin of the nearest-centroid similarity (lists)
_KEEP_VERSIONS = 32  # manifest records kept; older ones are pruned after a commit


class Manifest(BaseModel):
    """What an index was built with, and which generation is live; one record per version."""

    format_version: int = Field(FORMAT_VERSION, description="Storage layout version.")
    embed_model: str = Field(description="Id of the embedding model the documents were embedded with.")
    dimension: int = Field(description="Embedding dimension.")
    n_clusters: int = Field(description="Number of KMeans clusters.")
    generation: int = Field(description="The live generation of centroids and assignments.")
    data_collection: str = Field(description="The Chroma collection holding the documents and embeddings.")
    owns_data: bool = Field(description="False when the data collection is the app's own (adopted, zero copy).")
    clustered_count: int = Field(0, description="Records when the clusters were last fitted.")
    calibration: dict[str, dict[str, float | list[float]]] = Field(
        default_factory=dict,
        description="Probe budgets per depth and recall target (per bin of the query's nearest-centroid similarity), "
        "measured on this index's data.",
    )
    version: int = Field(0, description="Bumped by every committed write (add, delete, build, recluster).")
    random_state: int = Field(0, description="KMeans seed.")
    outlier_fence: float | None = Field(
        None, description="Affinity to its centroid below which a record is always scanned (None: from the lists)."
    )
    query_fence: float | None = Field(
        None,
        description="Nearest-centroid similarity below which a query is searched exactly, from real queries "
        "(ClusterIndex.calibrate); None: outlier_fence.",
    )
    updated_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @field_validator("calibration", mode="before")
    @classmethod
    def _parse_calibration(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value  # Chroma metadata holds only scalars

    def to_record(self) -> dict[str, Any]:
        fields = {key: value for key, value in self.model_dump().items() if value is not None}  # Chroma holds no None
        return {**fields, "calibration": json.dumps(self.calibration)}

    def bumped(self, **changes: Any) -> Manifest:
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return self.model_copy(update={**changes, "version": self.version + 1, "updated_at": now})


class ManifestLog:
    """The manifest versions of index ``name`` in one Chroma database."""

    def __init__(self, client: ClientAPI, name: str) -> None:
        self.client = client
        self.name = name
        self.collection_name = f"{name}.manifest"

    def read(self) -> Manifest | None:
        """The newest committed manifest, or None when there is no index of this name."""
        try:
            collection: Any = self.client.get_collection(self.collection_name, embedding_function=None)
            found: Any = collection.get(include=["metadatas"])
        except Exception as exc:
            if is_missing_collection(exc):
                return None
            raise
        versions = [i for i, record_id in enumerate(found["ids"]) if _version_of(record_id) >= 0]
        try:
            if versions:
                newest = found["metadatas"][max(versions, key=lambda i: _version_of(found["ids"][i]))]
                self._check_format(newest.get("format_version", 1))  # before its fields: a newer format may change them
                return Manifest.model_validate(newest)
            if collection.metadata:  # format 1 kept one manifest in the collection's metadata
                legacy = dict(collection.metadata)
                legacy.pop("doc_count", None)
                return Manifest.model_validate(legacy)
            if found["ids"]:  # generation claims only: a first build still running, or killed
                return None
        except ValidationError as exc:
            raise IndexCorruptedError(
                f"The manifest of index {self.name!r} is damaged or from an older cluster-retriever "
                f"({exc.error_count()} bad fields). Rebuild the index with ClusterIndex.build(...) or "
                f"ClusterIndex.from_vector_store(...)."
            ) from exc
        raise IndexCorruptedError(
            f"The manifest collection of index {self.name!r} is empty. Rebuild the index with ClusterIndex.build(...)."
        )

    def require(self) -> Manifest:
        manifest = self.read()
        if manifest is None:
            names = index_names(self.client)
            held = f"it holds {names}: pass one as name (--name)" if names else "it holds none"
            raise IndexNotFoundError(
                f"No cluster index named {self.name!r} in this Chroma store ({held}). Build one with "
                f"ClusterIndex.build(...) or `cluster-retriever build`, adopt a collection with `cluster-retriever adopt` "
                f"(named <collection>-clusters), or check the path/host."
            )
        return manifest  # read() refused a newer format already

    def _check_format(self, format_version: Any) -> None:
        if isinstance(format_version, int) and format_version > FORMAT_VERSION:
            raise IndexCorruptedError(
                f"Index {self.name!r} has storage format {format_version}, newer than this "
                f"library understands ({FORMAT_VERSION}): upgrade cluster-retriever."
            )

    def commit(self, manifest: Manifest) -> None:
        """Insert ``manifest`` as version ``manifest.version``; raise ``ConcurrentWriteError`` if
        another writer committed that version first."""
        collection: Any = self.client.get_or_create_collection(self.collection_name, embedding_function=None)
        token = uuid.uuid4().hex
        record_id = _version_id(manifest.version)
        collection.add(ids=[record_id], embeddings=[[0.0]], metadatas=[{**manifest.to_record(), "writer": token}])
        stored = collection.get(ids=[record_id], include=["metadatas"])["metadatas"]
        if not stored or stored[0].get("writer") != token:
            raise ConcurrentWriteError(
                f"Another writer committed version {manifest.version} of index {self.name!r} first; "
                f"this write was not applied. Retry it (the index reloads the new state first)."
            )
        stale = [_version_id(v) for v in range(max(0, manifest.version - 4 * _KEEP_VERSIONS), manifest.version - _KEEP_VERSIONS)]
        if stale and manifest.version % _KEEP_VERSIONS == 0:
            collection.delete(ids=stale)

    def claim(self, generation: int) -> int:
        """A generation number no other writer will use: the first free one from
        ``generation`` on, claimed by inserting ``g<N>`` (first writer wins, as for versions)."""
        collection: Any = self.client.get_or_create_collection(self.collection_name, embedding_function=None)
        token = uuid.uuid4().hex
        while True:
            claim = f"g{generation:012d}"
            collection.add(ids=[claim], embeddings=[[0.0]], metadatas=[{"writer": token}])
            stored = collection.get(ids=[claim], include=["metadatas"])["metadatas"]
            if stored and stored[0].get("writer") == token:
                return generation
            generation += 1


def _version_id(version: int) -> str:
    return f"v{version:012d}"


def _version_of(record_id: str) -> int:
    """The version of a manifest record ``v<N>``; -1 for anything else (generation claims)."""
    return int(record_id[1:]) if record_id.startswith("v") and record_id[1:].isdigit() else -1
