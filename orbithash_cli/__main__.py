"""``python -m orbithash_cli``: the operator commands without the rest of the ``orbithash`` tool."""

import sys

from orbithash_cli.commands import main

sys.exit(main())
