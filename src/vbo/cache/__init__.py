"""The project cache: manifests, verified downloads, S3 access (``format.md`` §2-§5)."""
