"""The release cache: manifests, release URLs, verified downloads, publishing and the project cache
(``docs/format.md`` §2-§5). Reading S3 objects and local files is the source layer's (:mod:`vbo.source`)."""
