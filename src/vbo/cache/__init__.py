"""The project cache: manifests, verified downloads, S3 access (``docs/format.md`` §2-§5)."""
