"""The subcommands of ``manage.py predcache``, one module per group; the command itself assembles them."""
