"""``python -m cli …`` runs the ``herald`` command (tests need no installed script)."""

from cli.main import main

main()
