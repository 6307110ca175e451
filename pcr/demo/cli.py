"""`pcr demo ...`: train and inspect the built-in demo model."""

import typer

app = typer.Typer(help="The built-in demo text-to-image model.", no_args_is_help=True)
