"""`python -m transfergen` (and `torchrun -m transfergen`) run the CLI."""

import sys

from .cli import main

sys.exit(main())
