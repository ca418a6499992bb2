"""``python -m analysis results|plot|report DIR …`` without the rest of the CLI."""

from __future__ import annotations

import sys

from analysis.cli import main

sys.exit(main())
