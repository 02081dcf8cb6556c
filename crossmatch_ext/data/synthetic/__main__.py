"""``python -m crossmatch_ext.data.synthetic``: write a synthetic LA or ACDC dataset."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
