"""Entry point: ``stenod …`` and ``python -m stenod …``."""

import sys

from stenod.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
