"""``python -m ensemble``: the command line (what a Ray Job's entrypoint runs)."""

from .cli import main

main()
