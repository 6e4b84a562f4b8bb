"""``python -m interp``: the same as the ``interp`` console script."""

import sys

from interp.app.cli import main

sys.exit(main())
