import sys

from fairbench.cli import main

sys.exit(main())
