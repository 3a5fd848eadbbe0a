"""`python -m worker` is `embed-worker`."""

from worker.cli.main import main

raise SystemExit(main())
