"""``python -m starter``: the ``wfa`` command line (see :mod:`starter.cli`)."""

import sys

from starter.cli import main

sys.exit(main())
