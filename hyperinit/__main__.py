"""``python -m hyperinit``: the ``hyperinit`` command, for environments where the console
script is not on ``PATH`` (a venv that is not activated, ``python -m`` habits)."""

import sys

from hyperinit.cli import main

if __name__ == "__main__":
    sys.exit(main())
