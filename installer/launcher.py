"""Entry point frozen into the app: the viewer, and nothing of the export side."""
import multiprocessing
import sys

from medexport.desktop.app import main

if __name__ == "__main__":
    multiprocessing.freeze_support()
    sys.exit(main())
