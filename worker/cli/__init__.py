"""The `embed-worker` command line: parsing, what each subcommand does, and its output."""
