"""Flask commands: `flask --app wsgi demo-data`."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup

from . import demo
from .database import writing
from .extensions import db
from .models import Role


def register(app: Flask) -> None:
    """Attach the commands to the app."""
    app.cli.add_command(users)
    app.cli.add_command(fast_days_commands)

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


users = AppGroup("users", help="Manage organizer and partner accounts.")


@users.command("create-organizer")
@click.argument("email")
def create_organizer(email: str) -> None:
    """Create an organizer account; the password is asked for, never taken as an argument."""
    from . import audit, auth

    password = click.prompt(
        "Password (at least 12 characters)", hide_input=True, confirmation_prompt=True
    )
    problem = auth.password_problem(password)
    if problem:
        raise click.ClickException(problem)
    with writing():
        try:
            user = auth.create_user(email, Role.ORGANIZER, password=password)
        except auth.AccountError as exc:
            raise click.ClickException(str(exc)) from None
        audit.record(
            "user.create",
            target=user,
            actor=user,
            after={"email": user.email, "role": "organizer", "via": "command line"},
        )
        db.session.commit()
    click.echo(f"organizer {user.email} created; sign in at /login")


# --- fast days ---------------------------------------------------------------------------

fast_days_commands = AppGroup("fast-days", help="Run fast days from the command line.")


@fast_days_commands.command("advance")
def advance_fast_days() -> None:
    """Open the fast days whose day has begun and close the ones whose day has ended."""
    from . import fast_days
    from .models import utcnow

    with writing():
        changes = fast_days.advance_statuses(utcnow())
        db.session.commit()
        for change in changes:
            click.echo(f"{change.day.slug}: {change.before} -> {change.after}")
    if not changes:
        click.echo("fast days: nothing to move")
