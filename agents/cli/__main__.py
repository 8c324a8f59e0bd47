"""``python -m agents.cli``: the ``splitseq`` command line."""

import sys

from agents.cli import main

sys.exit(main())
