"""The ``dehaze`` command line: one module per subcommand, the parser in ``cli``; ``python -m commands`` runs it.

Every subcommand module has ``HELP`` (its one line in ``dehaze --help``), ``add_arguments(parser)`` and
``run(args) -> int`` (the exit status). The libraries (``model``, ``training``, ``service``) parse no arguments;
the modules here turn flags into their calls and their errors into exit statuses. A module imports what is heavy
(torch, the trainers, FastAPI) inside ``run``/``add_arguments``, so ``dehaze --help`` stays fast and ``dehaze api``
never loads torch.
"""
