import sys

from landscope.cli import main

sys.exit(main())
