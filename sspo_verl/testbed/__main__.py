"""`python -m sspo_verl.testbed`: the off-policy testbed (see run.py)."""

import sys

from .run import main

sys.exit(main())
