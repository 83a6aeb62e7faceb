"""``python -m vbo`` runs the ``vbo`` command line (same as the ``vbo`` console script)."""

from vbo.cli import main

if __name__ == "__main__":
    main()
