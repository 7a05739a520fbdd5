import sys

try:
    from fairbench.cli import main
except KeyboardInterrupt:  # Ctrl-C in the very first moment: as everywhere else, one line (fairbench.cli.main)
    print("fairbench: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
