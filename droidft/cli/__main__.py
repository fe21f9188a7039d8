"""`python -m droidft.cli ...` (what the `droidft` console script runs)."""

import sys

from . import main

sys.exit(main())
