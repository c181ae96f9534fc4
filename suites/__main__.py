"""``python -m suites`` is the ``ssm-metarl`` command line."""

import sys

from suites.cli import main

sys.exit(main())
