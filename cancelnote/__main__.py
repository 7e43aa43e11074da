"""``python -m cancelnote``: the ``cancelnote`` command."""

import sys

from .cli import main

sys.exit(main())
