"""``python -m cinn``: see :mod:`cinn.cli`."""

import sys

from cinn.cli import main

sys.exit(main())
