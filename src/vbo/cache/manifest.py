"""Release manifests: naming, versions, blake2b file hashes, and building a manifest for a release tree.

Manifest JSON (``docs/format.md`` §3; hashing §4): ``project_name``, ``manifest_version``, ``metadata_file_id_column_name``,
``data_pipeline``, ``metadata_files`` (table name → entry) and ``data_files`` (file id → entry); an entry
is ``{url, version_id, file_hash}``.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from vbo.errors import ManifestFieldError, UnsafeNameError
from vbo.source.s3 import BUCKET_NAME, BUCKET_REGION, bucket_and_key, object_url  # noqa: F401 (re-exported: the release bucket)

PROJECT_NAME = "visual-behavior-ophys"
METADATA_TABLES = ("behavior_session_table", "ophys_session_table", "ophys_experiment_table", "ophys_cells_table")
METADATA_PREFIX = "project_metadata"
MANIFEST_PREFIX = "manifests"
FILE_ID_COLUMN = "file_id"
HASH_CHUNK_BYTES = 1_000_000
_MANIFEST_NAME = re.compile(r"^(?P<project>[A-Za-z0-9][A-Za-z0-9._-]*)_manifest_v"
                            r"(?P<version>\d{1,6}\.\d{1,6}\.\d{1,6})\.json$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_VERSION = re.compile(r"^\d{1,6}\.\d{1,6}\.\d{1,6}$")
_HASH = re.compile(r"^[0-9a-fA-F]{128}$")
_FILE_ID = re.compile(r"^-?\d{1,19}$")
ENTRY_FIELDS = ("url", "version_id", "file_hash")


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


def is_manifest_name(name: str) -> bool:
    """True if ``name`` (a bare file name) is a well-formed manifest file name with a safe project part."""
    return isinstance(name, str) and "/" not in name and bool(_MANIFEST_NAME.fullmatch(name)) and ".." not in name


def safe_name(name, what: str) -> str:
    """``name`` itself if it may become one path component (``[A-Za-z0-9._-]``, no ``..``, not hidden).

    Raises
    ------
    UnsafeNameError
        Anything else: separators, ``..``, absolute paths, control characters, empty or over-long names.
    """
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise UnsafeNameError(str(name), f"{what} must be letters, digits, '.', '_' or '-' (no '..', no '/', "
                                         "at most 200 characters) to become a folder name in the cache")
    return name


def validate_manifest(manifest, path: str | Path, name: str | None = None) -> dict:
    """Check every field of a release manifest (``docs/format.md`` §3) before any of it becomes a path or a URL.

    Parameters
    ----------
    manifest
        The parsed JSON.
    path
        The manifest file (named in errors).
    name
        The manifest's file name, whose version must match ``manifest_version``.

    Returns
    -------
    dict
        ``manifest`` itself.

    Raises
    ------
    ManifestFieldError
        A field is missing, of the wrong type or malformed; the error names the file and the field.
    UnsafeNameError
        ``project_name`` or ``manifest_version`` cannot safely become a folder name.
    """
    def bad(field: str, problem: str) -> ManifestFieldError:
        return ManifestFieldError(path, field, problem)

    if not isinstance(manifest, dict):
        raise bad("(top level)", f"must be a JSON object, not {type(manifest).__name__}")
    for field in ("project_name", "manifest_version", "metadata_files", "data_files"):
        if field not in manifest:
            raise bad(field, "missing")
    for field in ("project_name", "manifest_version"):
        if not isinstance(manifest[field], str):
            raise bad(field, f"must be a string, not {type(manifest[field]).__name__}")
    try:
        safe_name(manifest["project_name"], "project_name")
    except UnsafeNameError as err:
        raise UnsafeNameError(err.key, f"manifest {path}: field project_name: {err.problem}") from None
    version = manifest["manifest_version"]
    if not _VERSION.fullmatch(version):
        raise bad("manifest_version", f"{version[:40]!r} is not a version X.Y.Z")
    if name is not None:
        match = _MANIFEST_NAME.match(Path(name).name)
        if match and match.group("version") != version:
            raise bad("manifest_version", f"{version!r} differs from the version in the file name {name!r}")
    if not isinstance(manifest.get("metadata_file_id_column_name", ""), str):
        raise bad("metadata_file_id_column_name", "must be a string")
    pipeline = manifest.get("data_pipeline", [])
    if not isinstance(pipeline, list) or not all(isinstance(p, dict) for p in pipeline):
        raise bad("data_pipeline", "must be a list of objects")
    for group in ("metadata_files", "data_files"):
        entries = manifest[group]
        if not isinstance(entries, dict):
            raise bad(group, f"must be an object (name -> entry), not {type(entries).__name__}")
        for key, entry in entries.items():
            if group == "data_files" and not _FILE_ID.fullmatch(key):
                raise bad(f"data_files[{key[:40]!r}]", "file ids must be integers")
            _check_entry(entry, f"{group}[{key[:40]!r}]", bad)
    if set(manifest["metadata_files"]) != set(METADATA_TABLES):
        raise bad("metadata_files", f"must list exactly the metadata files {list(METADATA_TABLES)}, not "
                                    f"{sorted(manifest['metadata_files'])[:8]}")
    return manifest


def _check_entry(entry, where: str, bad) -> None:
    if not isinstance(entry, dict):
        raise bad(where, f"must be an object with {', '.join(ENTRY_FIELDS)}, not {type(entry).__name__}")
    for field in ENTRY_FIELDS:
        value = entry.get(field)
        if not isinstance(value, str) or not value:
            raise bad(f"{where}.{field}", "missing" if value is None else "must be a non-empty string")
        if len(value) > 2048 or any(ord(ch) < 32 or ch == "\x7f" for ch in value):
            raise bad(f"{where}.{field}", "too long or holds control characters")
    if not _HASH.fullmatch(entry["file_hash"]):
        raise bad(f"{where}.file_hash", "must be 128 hexadecimal digits (blake2b)")


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
# the real bucket's natural movie: fixed object version and hash (docs/format.md §5.7)
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


# --- comparing two manifests (docs/format.md §3.5) ------------------------------------------------------------


def relative_path_of_url(url: str) -> str:
    """The path of an entry's object below the project folder (``docs/format.md`` §3.3, §3.5)."""
    return bucket_and_key(url)[1].split("/", 1)[1]


def compare_manifests(first: dict, second: dict) -> dict[str, list[tuple[str, str]]]:
    """Changes from manifest ``first`` (older) to ``second`` (``docs/format.md`` §3.5).

    Parameters
    ----------
    first, second
        Validated manifests (:func:`validate_manifest`).

    Returns
    -------
    dict
        ``{"metadata_changes": [...], "data_changes": [...]}``, each a list of ``(path, message)`` sorted by
        path; a message says the path ``changed``, was ``renamed`` (its hash is found under another path),
        ``deleted`` or ``created``.
    """
    def hashes(entries: dict) -> dict[str, str]:
        return {relative_path_of_url(e["url"]): e["file_hash"] for e in entries.values()}

    out = {}
    for group, label in (("metadata_files", "metadata_changes"), ("data_files", "data_changes")):
        out[label] = _changes(hashes(first[group]), hashes(second[group]))
    return out


def _changes(old: dict[str, str], new: dict[str, str]) -> list[tuple[str, str]]:
    """``(path, message)`` for every path that differs between two ``{path: hash}`` maps."""
    new_by_hash = {h: p for p, h in new.items()}
    old_hashes = set(old.values())
    changes = []
    for path in sorted(set(old) | set(new)):
        if path in old and path in new:
            if old[path] != new[path]:
                changes.append((path, f"{path} changed"))
        elif path in old:
            renamed = new_by_hash.get(old[path])
            changes.append((path, f"{path} renamed {renamed}" if renamed else f"{path} deleted"))
        elif new[path] not in old_hashes:
            changes.append((path, f"{path} created"))
    return changes


def format_comparison(name_0: str, name_1: str, changes: dict[str, list[tuple[str, str]]]) -> str:
    """The text of :func:`compare_manifests`' result, one line per file (AllenSDK's wording)."""
    lines = [msg for _, msg in changes["metadata_changes"]] + [msg for _, msg in changes["data_changes"]]
    if not lines:
        return "The two manifests are equivalent"
    return f"Changes going from\n{name_0}\nto\n{name_1}\n\n" + "\n".join(lines)
