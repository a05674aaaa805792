"""The `mmfit` command. Training lands with its own issue; until then it only explains itself."""

import typer

app = typer.Typer(help="Train fusion and head layers on an mmcache feature cache (mmfit train --cache DIR). "
                       "Not implemented yet: this release ships the cache (mmcache).",
                  no_args_is_help=True, add_completion=False)


@app.command()
def train():
    """Train a fusion + head on cached features (coming with the mmfit issue)."""
    typer.echo("mmfit train is not implemented yet; see `mmcache --help` for the feature cache.", err=True)
    raise typer.Exit(2)
