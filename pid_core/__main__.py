"""``python -m pid_core`` entry point."""

import sys

from .frontends.cli import main

sys.exit(main())
