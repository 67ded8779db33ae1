"""``python -m commands ARGS``: the ``dehaze`` command without the installed script (e.g. ``PYTHONPATH=.``)."""

from commands.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
