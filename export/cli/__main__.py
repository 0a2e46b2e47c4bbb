"""``python -m medexport.export.cli``: the ``medexport`` command."""
import sys

from . import main

sys.exit(main())
