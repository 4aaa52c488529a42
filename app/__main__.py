"""``python -m headmap``: the same command line as ``headmap``."""

from .cli import main

raise SystemExit(main())
