"""The `pcr` command line: one command per pipeline stage, plus tools."""

from __future__ import annotations

import typer

from pcr.demo.cli import app as demo_app

app = typer.Typer(
    help="pcr: post-training quantization of text-to-image diffusion models (PCR + QDiffBench).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(demo_app, name="demo")


@app.command()
def version() -> None:
    """Print the pcr version."""
    from pcr import __version__

    typer.echo(__version__)


if __name__ == "__main__":
    app()
