"""`python -m warm` is the `warm` console script."""
from warm.cli import main

raise SystemExit(main())
