import sys

from armlib.cli import main

sys.exit(main())
