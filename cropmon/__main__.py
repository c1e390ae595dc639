"""`python -m cropmon` -> cli.main()."""

import sys

from cropmon.cli import main

if __name__ == "__main__":
    sys.exit(main())
