"""``python -m clipfuse.cli``: the ``clipfuse`` command."""

import sys

from clipfuse.cli import main

sys.exit(main())
