"""``python -m QSMLogic`` is the ``susceptibility-mri`` command."""
import sys

from .cli import main

sys.exit(main())
