"""``python -m augment``: see :mod:`augment.cli`."""

import sys

from augment.cli import main

sys.exit(main())
