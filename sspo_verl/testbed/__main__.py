"""`python -m sspo_verl.testbed`: the off-policy testbed (see run.py)."""

import sys

from .run import main

if __name__ == "__main__":  # worker processes (spawned) import this module again: they must not run the job
    sys.exit(main())
