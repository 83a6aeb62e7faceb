"""NWB extension namespaces of the Visual Behavior files (YAML), loaded by :mod:`vbo.nwb.write` on demand."""
