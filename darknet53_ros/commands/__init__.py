"""Subcommands of the ``darknet53`` command line, one module per area."""
