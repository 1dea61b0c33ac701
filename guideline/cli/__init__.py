"""The thin command line: routing, shared flags, and one module per subcommand; the only code that prints and exits."""
