"""``python -m stateft.serve``: `stateft.serve.cli`."""

import sys

from stateft.serve.cli import main

sys.exit(main())
