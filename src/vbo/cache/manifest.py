"""Release manifests: naming, versions, blake2b file hashes, and building a manifest for a release tree.

Manifest JSON (``format.md`` §3): ``project_name``, ``manifest_version``, ``metadata_file_id_column_name``,
``data_pipeline``, ``metadata_files`` (table name → entry) and ``data_files`` (file id → entry); an entry
is ``{url, version_id, file_hash}``.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

PROJECT_NAME = "visual-behavior-ophys"
BUCKET_NAME = "visual-behavior-ophys-data"
BUCKET_REGION = "us-west-2"
METADATA_TABLES = ("behavior_session_table", "ophys_session_table", "ophys_experiment_table", "ophys_cells_table")
METADATA_PREFIX = "project_metadata"
MANIFEST_PREFIX = "manifests"
FILE_ID_COLUMN = "file_id"
HASH_CHUNK_BYTES = 1_000_000
_MANIFEST_NAME = re.compile(r"^(?P<project>.+)_manifest_v(?P<version>\d+\.\d+\.\d+)\.json$")


def file_hash(path: str | Path) -> str:
    """BLAKE2b (64-byte digest) of a file, lowercase hex (128 characters), read in 1 MB chunks."""
    digest = hashlib.blake2b()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_name(version: str, project: str = PROJECT_NAME) -> str:
    """File name of a manifest, e.g. ``visual-behavior-ophys_project_manifest_v1.1.0.json``."""
    return f"{project}_project_manifest_v{version}.json"


def manifest_version(name: str) -> tuple[int, int, int]:
    """Semantic version of a manifest file name, as a comparable tuple.

    Raises
    ------
    ValueError
        If ``name`` is not a manifest file name.
    """
    match = _MANIFEST_NAME.match(Path(name).name)
    if not match:
        raise ValueError(f"{name!r} is not a manifest file name (expected '<project>_manifest_vX.Y.Z.json')")
    return tuple(int(part) for part in match.group("version").split("."))


def object_url(key: str, bucket: str = BUCKET_NAME, region: str = BUCKET_REGION) -> str:
    """HTTPS URL of an object key in the bucket (the form manifests use)."""
    return f"https://{bucket}.s3.{region}.amazonaws.com/{key}"


def metadata_key(table: str) -> str:
    return f"{PROJECT_NAME}/{METADATA_PREFIX}/{table}.csv"


def manifest_key(version: str) -> str:
    return f"{PROJECT_NAME}/{MANIFEST_PREFIX}/{manifest_name(version)}"


def behavior_nwb_key(behavior_session_id: int) -> str:
    """Object key of a behavior-only session's NWB."""
    return f"{PROJECT_NAME}/behavior_sessions/behavior_session_{int(behavior_session_id)}.nwb"


def experiment_nwb_key(ophys_experiment_id: int) -> str:
    """Object key of an ophys experiment's NWB."""
    return f"{PROJECT_NAME}/behavior_ophys_experiments/behavior_ophys_experiment_{int(ophys_experiment_id)}.nwb"


NATURAL_MOVIE_KEY = f"{PROJECT_NAME}/resources/Movie_TOE1.npy"
# the real bucket's natural movie: fixed object version and hash (format.md §5.7)
NATURAL_MOVIE_VERSION_ID = "Czht4ouDiTvs4CC_s8hsaE7VtVt_E9rO"
NATURAL_MOVIE_HASH = ("7e44cba154b29e1511ab8e5453b7aa5070f1ae456724b5b2541c97c052fbd80a"
                      "ebf159e5f933ab319bda8fdab7b863a096cdb44f129abd20a8c4cc791af4bc41")


def build_manifest(version: str, metadata_files: dict[str, tuple[str, str, str]],
                   data_files: dict[int, tuple[str, str, str]], data_pipeline: list[dict]) -> dict:
    """A manifest dict from ``{name: (key, version_id, file_hash)}`` and ``{file_id: (key, version_id, hash)}``."""
    def entry(key: str, version_id: str, digest: str) -> dict:
        return {"url": object_url(key), "version_id": version_id, "file_hash": digest}

    return {
        "project_name": PROJECT_NAME,
        "manifest_version": version,
        "metadata_file_id_column_name": FILE_ID_COLUMN,
        "data_pipeline": data_pipeline,
        "metadata_files": {name: entry(*metadata_files[name]) for name in sorted(metadata_files)},
        "data_files": {str(fid): entry(*data_files[fid]) for fid in sorted(data_files)},
    }


def write_manifest(manifest: dict, path: str | Path) -> Path:
    """Write a manifest as indented, key-sorted JSON (same dict, same bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path
