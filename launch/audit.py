"""``python -m launch.audit``: the former name of ``python -m studies.audit`` (kept working).

A command shim, not part of the trainer: nothing in the trainer imports it.
"""

import sys

from studies.audit import main

if __name__ == "__main__":
    sys.exit(main())
