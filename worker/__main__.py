"""`python -m worker` is `embed-worker`."""

from worker.cli import main

raise SystemExit(main())
