"""URLs of the release's own objects: a manifest, a metadata CSV, a behavior NWB, an experiment NWB.

The keys come from :mod:`vbo.cache.manifest` (``docs/format.md`` §2), the URL forms from
:func:`vbo.source.s3.object_https_url`.
"""

from __future__ import annotations

from vbo.cache import manifest as mf
from vbo.source.s3 import object_https_url


def manifest_url(version: str, *, bucket: str = mf.BUCKET_NAME, version_id: str | None = None,
                 endpoint_url: str | None = None) -> str:
    """URL of the manifest of a release version, e.g. ``1.1.0``."""
    return object_https_url(mf.manifest_key(version), bucket, version_id, endpoint_url)


def metadata_url(table: str, *, bucket: str = mf.BUCKET_NAME, version_id: str | None = None,
                 endpoint_url: str | None = None) -> str:
    """URL of a metadata CSV by table name (``behavior_session_table`` ...; a ``.csv`` suffix is accepted)."""
    name = table[:-4] if table.endswith(".csv") else table
    if name not in mf.METADATA_TABLES:
        raise ValueError(f"unknown metadata table {table!r}; expected one of {list(mf.METADATA_TABLES)}")
    return object_https_url(mf.metadata_key(name), bucket, version_id, endpoint_url)


def behavior_nwb_url(behavior_session_id: int, *, bucket: str = mf.BUCKET_NAME, version_id: str | None = None,
                     endpoint_url: str | None = None) -> str:
    """URL of a behavior-only session's NWB (imaging sessions have none; use the experiment NWBs)."""
    return object_https_url(mf.behavior_nwb_key(behavior_session_id), bucket, version_id, endpoint_url)


def experiment_nwb_url(ophys_experiment_id: int, *, bucket: str = mf.BUCKET_NAME, version_id: str | None = None,
                       endpoint_url: str | None = None) -> str:
    """URL of an ophys experiment's NWB."""
    return object_https_url(mf.experiment_nwb_key(ophys_experiment_id), bucket, version_id, endpoint_url)
