"""``python -m sccr.tl tune|diagnose INPUT --out DIR`` (the same as ``sccr tune`` / ``sccr diagnose``)."""

import sys

from ._diagnose import main

sys.exit(main())
