"""``python -m qvq_gradio.cli``: the ``qvq`` command."""

from __future__ import annotations

import sys

from . import main

sys.exit(main())
