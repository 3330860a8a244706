"""``python -m launch.compare``: the former name of ``python -m studies.compare`` (kept working).

A command shim, not part of the trainer: nothing in the trainer imports it.
"""

import sys

from studies.compare import main

if __name__ == "__main__":
    sys.exit(main())
