"""`python -m biogpt.cli ...` is `biogpt ...`."""

import sys

from . import main

sys.exit(main())
