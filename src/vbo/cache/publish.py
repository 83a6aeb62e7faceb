"""Publish a release folder (``vbo simulate`` output) to a versioned S3 bucket, like the real one.

Older object versions (``previous_versions/``: data files, then each older version's CSVs, oldest version
first) are uploaded first, then the latest objects, so every key's
newest version is the latest release's; then each manifest is rewritten with the bucket's URLs and the
version ids the server assigned, and uploaded. The result is fetchable exactly like the release bucket.
"""

from __future__ import annotations

import json
from pathlib import Path
from collections.abc import Callable

import boto3
from botocore.config import Config

from vbo.cache import manifest as mf
from vbo.source.s3 import CONNECT_TIMEOUT, READ_TIMEOUT, bucket_and_key, object_https_url, resolve_endpoint

PREVIOUS_VERSIONS = "previous_versions"


def upload_client(endpoint_url: str | None = None):
    """A signed boto3 S3 client (credentials from the usual AWS environment/config), endpoint as given."""
    endpoint = resolve_endpoint(endpoint_url)
    config = Config(s3={"addressing_style": "path"} if endpoint else {}, retries={"mode": "standard"},
                    connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT)
    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=mf.BUCKET_REGION, config=config)


def _objects(folder: Path) -> list[tuple[str, Path]]:
    """(key, path) of every release object under ``folder`` (manifests excluded), in key order."""
    root = folder / mf.PROJECT_NAME
    if not root.is_dir():
        return []
    manifests = root / mf.MANIFEST_PREFIX
    return sorted((p.relative_to(folder).as_posix(), p) for p in root.rglob("*")
                  if p.is_file() and manifests not in p.parents)


def _older_version_folders(release_dir: Path) -> list[Path]:
    """``previous_versions/vX.Y.Z/`` folders (each older version's own metadata CSVs), oldest first."""
    folders = [p for p in (release_dir / PREVIOUS_VERSIONS).glob("v*.*.*") if p.is_dir()]
    return sorted(folders, key=lambda p: tuple(int(x) for x in p.name[1:].split(".")))


def publish(release_dir: str | Path, bucket: str, *, endpoint_url: str | None = None, client=None,
            progress: Callable[[int, int], None] | None = None) -> dict[str, dict]:
    """Upload a release to ``bucket`` and rewrite its manifests with the server's version ids.

    Parameters
    ----------
    release_dir
        A folder holding ``visual-behavior-ophys/`` (and optionally ``previous_versions/``).
    bucket
        An existing, versioned bucket.
    endpoint_url
        S3 endpoint (a mirror or a test server); default from ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``.
    client
        A boto3 S3 client able to write (default: :func:`upload_client`).
    progress
        Called as ``progress(done, total)`` after each object.

    Returns
    -------
    dict
        ``{manifest name: rewritten manifest}``.
    """
    release_dir = Path(release_dir)
    client = client or upload_client(endpoint_url)
    status = client.get_bucket_versioning(Bucket=bucket).get("Status")
    if status != "Enabled":
        raise ValueError(f"bucket {bucket!r} must have versioning enabled to publish a release (it is {status})")
    manifests = sorted((release_dir / mf.PROJECT_NAME / mf.MANIFEST_PREFIX).glob("*_manifest_v*.json"))
    if not manifests:
        raise FileNotFoundError(f"{release_dir} holds no {mf.PROJECT_NAME}/{mf.MANIFEST_PREFIX}/*.json")
    uploads = [*_objects(release_dir / PREVIOUS_VERSIONS),
               *(item for folder in _older_version_folders(release_dir) for item in _objects(folder)),
               *_objects(release_dir)]
    versions: dict[tuple[str, str], str] = {}  # (key, blake2b) → VersionId
    for done, (key, path) in enumerate(uploads, start=1):
        digest = mf.file_hash(path)
        if (key, digest) not in versions:
            with open(path, "rb") as body:
                reply = client.put_object(Bucket=bucket, Key=key, Body=body, ACL="public-read")
            versions[(key, digest)] = reply["VersionId"]
        if progress:
            progress(done, len(uploads))
    published = {}
    for path in manifests:
        manifest = json.loads(path.read_text())
        for group in ("metadata_files", "data_files"):
            for entry in manifest[group].values():
                key = bucket_and_key(entry["url"])[1]
                try:
                    entry["version_id"] = versions[(key, entry["file_hash"])]
                except KeyError:
                    raise FileNotFoundError(f"{path.name}: no uploaded object {key} with hash "
                                            f"{entry['file_hash'][:16]}…") from None
                entry["url"] = object_https_url(key, bucket=bucket)
        body = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        client.put_object(Bucket=bucket, Key=f"{mf.PROJECT_NAME}/{mf.MANIFEST_PREFIX}/{path.name}", Body=body,
                          ACL="public-read")
        published[path.name] = manifest
    return published
