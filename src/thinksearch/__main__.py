"""``python -m thinksearch`` is the ``thinksearch`` command (and what ``accelerate launch -m`` runs)."""

import sys

from thinksearch.cli import main

sys.exit(main())
