"""`python -m hearth.cli` runs the `hearth` command."""

from .app import main

main()
