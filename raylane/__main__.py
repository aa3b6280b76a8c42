"""`python -m raylane <command> ...`: the same CLI as the installed `raylane` script."""

import sys

from raylane.pipelines.cli import main

sys.exit(main())
