"""`python -m sav_assets.cli`: the same as the `sav-assets` console script."""

import sys

from sav_assets.cli import main

sys.exit(main())
