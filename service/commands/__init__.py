"""The service's subcommands of ``dehaze`` (serve, api, worker, run); each exposes add_arguments and run."""
