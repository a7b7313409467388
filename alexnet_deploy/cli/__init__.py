"""The ``alexnet`` command line: parses options, calls the library, prints.

``app`` is the Typer application and ``main`` the console entry point. Commands live in
one module per group (model, precision, optimize, runtime, deploy); importing this package
registers them in pipeline order.
"""

from alexnet_deploy.cli.app import app, main
from alexnet_deploy.cli import model_commands, precision_commands, optimize_commands, runtime_commands, deploy_commands  # noqa: F401  (registers the commands)

__all__ = ["app", "main"]
