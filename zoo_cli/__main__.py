"""`python -m zoo_cli ...` is the `zoo` command."""

import sys

from zoo_cli import main

sys.exit(main())
