"""Flask commands: `flask --app wsgi demo-data`."""

from __future__ import annotations

import click
from flask import Flask

from . import demo
from .database import writing
from .extensions import db


def register(app: Flask) -> None:
    """Attach the commands to the app."""

    @app.cli.command("demo-data")
    @click.option("--force", is_flag=True, help="Load even if the database already has fast days.")
    def demo_data(force: bool) -> None:
        """Load demo fast days, groups, gifts and logins into an empty database."""
        if app.config["ENV_NAME"] == "production":
            raise click.ClickException("demo data is for development only")
        with writing():
            if not force and not demo.is_empty():
                click.echo("demo data: the database already has fast days; nothing loaded")
                return
            demo.load()
            db.session.commit()
        click.echo("demo data: loaded three fast days, six groups and two logins")
