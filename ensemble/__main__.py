"""``python -m ensemble``: the command line (what a Ray Job's entrypoint runs)."""

from .cli import main

if __name__ == "__main__":
    main()
