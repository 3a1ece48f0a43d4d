"""The ``pollchat`` command: serve, and manage users without HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import click
from pydantic import ValidationError

from pollchat.clock import SystemClock
from pollchat.domain.errors import NotFound, PollchatError
from pollchat.domain.records import Role, User
from pollchat.server.auth import hash_token, new_token
from pollchat.settings import Settings
from pollchat.storage import Storage, create_storage

if TYPE_CHECKING:
    from pollchat.client import PollingChatService

_T = TypeVar("_T")
# Exit statuses as a shell reports them for a tool stopped by a signal: 128 + SIGINT, 128 + SIGPIPE.
INTERRUPTED = 130
OUTPUT_CLOSED = 141


def load_settings(**overrides: Any) -> Settings:
    """Settings from ``POLLCHAT_*``, with the flags that were given winning."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise click.UsageError(problems) from exc


@contextlib.contextmanager
def _ending_quietly() -> Iterator[None]:
    """End as Unix tools do, without a traceback: 130 on Ctrl-C, 141 when standard output is closed."""
    from pollchat.client.terminal import OutputClosed

    try:
        yield
    except KeyboardInterrupt:
        raise click.exceptions.Exit(INTERRUPTED) from None
    except (BrokenPipeError, OutputClosed):
        # What is still buffered for the closed pipe goes nowhere, instead of failing again
        # (with a traceback) when the interpreter flushes at exit.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        raise click.exceptions.Exit(OUTPUT_CLOSED) from None


class QuietGroup(click.Group):
    """The ``pollchat`` group: its commands, and its own ``--help``, end quietly on Ctrl-C or a closed output."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        with _ending_quietly():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        with _ending_quietly():
            return super().invoke(ctx)


@click.group(cls=QuietGroup)
@click.version_option(package_name="pollchat")
def main() -> None:
    """pollchat: chat over plain HTTP polling."""


@main.command()
@click.option("--host", help="Address to listen on [POLLCHAT_HOST; default 127.0.0.1].")
@click.option("--port", type=int, help="Port to listen on [POLLCHAT_PORT; default 8000].")
@click.option("--database", "database_url", help="sqlite:///file.db or postgresql://... [POLLCHAT_DATABASE_URL].")
@click.option("--assistant", help="Who answers as assistant: none or echo [POLLCHAT_ASSISTANT; default echo].")
@click.option("--log-level", help="debug, info, warning or error [POLLCHAT_LOG_LEVEL; default info].")
@click.option("--workers", type=int, help="Worker processes; more than one needs PostgreSQL [POLLCHAT_WORKERS].")
def serve(**flags: Any) -> None:
    """Run the chat server."""
    from pollchat.server.run import run

    settings = load_settings(**flags)
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    base = f"http://{settings.host}:{settings.port}"

    def announce(token: str | None) -> None:
        if token is None:
            click.echo(f"Open the chat: {base}/  (sign in with a token; `pollchat users rotate admin` makes one)")
        else:
            click.echo(f"First start: created user 'admin'. Its token, shown only this once:\n\n    {token}\n")
            click.echo(f"Open the chat: {base}/#token={token}")
            click.echo(f"Or: curl -H 'Authorization: Bearer {token}' {base}/api/v1/admin/chat/sessions\n")
        sys.stdout.flush()

    try:
        where = f"database {settings.database_url}, assistant {settings.assistant}"
        click.echo(f"pollchat serving on {base}/ ({where}; API docs at {base}/docs)")
        sys.stdout.flush()
        run(settings, announce_token=announce)
    except PollchatError as exc:
        raise click.ClickException(exc.message) from exc


def _client_options(command: Any) -> Any:
    command = click.option("--token", envvar="POLLCHAT_TOKEN", required=True, help="Bearer token [POLLCHAT_TOKEN].")(
        command
    )
    return click.option(
        "--url",
        envvar="POLLCHAT_URL",
        default="http://127.0.0.1:8000",
        show_default=True,
        help="The server [POLLCHAT_URL].",
    )(command)


@main.command()
@_client_options
@click.option("--session", "session_id", required=True, help="Session to post into (created if new).")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Give up after this many seconds.")
@click.argument("text")
def send(url: str, token: str, session_id: str, timeout: float, text: str) -> None:
    """Send TEXT and print the acknowledged message as one JSON line."""
    from pollchat.client import PollingChatService
    from pollchat.client.terminal import message_json, send_once

    async def go() -> str:
        service = PollingChatService(url, token, session_id)
        try:  # only the sender runs: a script that sends has no use for polls
            return message_json(await send_once(service, text, timeout=timeout))
        finally:
            await service.aclose()

    try:
        click.echo(asyncio.run(go()))
    except TimeoutError:
        raise click.ClickException(f"not acknowledged within {timeout:g} s") from None
    except RuntimeError as exc:
        raise click.ClickException(f"refused: {exc}") from None


@main.command()
@_client_options
@click.option("--session", "session_id", required=True, help="Session to follow.")
@click.option("--since", help="A cursor to start after (default: the start of the session).")
def tail(url: str, token: str, session_id: str, since: str | None) -> None:
    """Follow a session for ever, printing each new or changed message as one JSON line."""
    from pollchat.client import PollingChatService
    from pollchat.client.terminal import LineOutput
    from pollchat.client.terminal import tail as follow

    async def go() -> None:
        async with PollingChatService(url, token, session_id, cursor=since) as service:
            await follow(service, LineOutput(sys.stdout))

    asyncio.run(go())


@main.command()
@_client_options
@click.option("--session", "session_id", help="Session to chat in (default: a new one).")
@click.option("--state", "state_path", help="File keeping unsent messages across restarts.")
@click.option("--plain", is_flag=True, help="Plain lines even on a terminal (the mode used when not on one).")
def chat(url: str, token: str, session_id: str | None, state_path: str | None, plain: bool) -> None:
    """Chat interactively: on a terminal a chat screen, otherwise one line per event."""
    from pollchat.client import PollingChatService

    session = session_id or f"cli-{uuid.uuid4().hex[:12]}"
    screen = not plain and sys.stdin.isatty() and sys.stdout.isatty() and os.environ.get("TERM") != "dumb"

    async def go() -> int:
        service = PollingChatService(url, token, session, client_name="pollchat chat", state_path=state_path)
        try:
            return await (_chat_screen(service) if screen else _chat_lines(service))
        finally:
            await service.aclose()

    status = asyncio.run(go())
    if status:
        raise click.exceptions.Exit(status)


async def _chat_screen(service: PollingChatService) -> int:
    from pollchat.client.screen import ChatScreen

    status = await ChatScreen(service).run()
    # On the terminal's own screen again, where it stays after we are gone.
    if pending := len(service.pending):
        click.echo(f"-- {pending} message(s) not yet sent stay queued")
    return status


async def _chat_lines(service: PollingChatService) -> int:
    from pollchat.client.terminal import LineChat, LineOutput, read_lines

    lines: asyncio.Queue[str | None] = asyncio.Queue()
    reader = asyncio.create_task(read_lines(sys.stdin, lines))
    try:
        await LineChat(service, LineOutput(sys.stdout)).run(lines)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return 0


@main.group()
def users() -> None:
    """Manage users directly in the database."""


def _on_storage(database_url: str | None, operation: Callable[[Storage], Awaitable[_T]]) -> _T:
    """Run ``operation`` on the database of the settings, opened for it alone."""
    settings = load_settings(database_url=database_url)

    async def run() -> _T:
        storage = create_storage(settings.database_url)
        await storage.open()
        try:
            return await operation(storage)
        finally:
            await storage.close()

    try:
        return asyncio.run(run())
    except PollchatError as exc:
        raise click.ClickException(exc.message) from exc


async def _user_named(storage: Storage, name: str) -> User:
    for user in await storage.list_users():
        if user.name == name:
            return user
    raise NotFound(f"no user named {name!r}", code="user_not_found")


_database_option = click.option("--database", "database_url", help="The server's database URL [POLLCHAT_DATABASE_URL].")


@users.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(["member", "operator", "admin"]), default="member", show_default=True)
@_database_option
def create_user(name: str, role: Role, database_url: str | None) -> None:
    """Create a user and print its new token."""
    token = new_token()

    async def create(storage: Storage) -> None:
        await storage.create_user(name=name, role=role, token_hash=hash_token(token), now=SystemClock().now())

    _on_storage(database_url, create)
    click.echo(token)


# Servers on PostgreSQL hear these changes at once. A server on the same SQLite file does not:
# it may accept a token it remembered for up to five seconds more.


@users.command("rotate")
@click.argument("name")
@_database_option
def rotate_token(name: str, database_url: str | None) -> None:
    """Give user NAME a new token and print it; the old one stops working."""
    token = new_token()

    async def rotate(storage: Storage) -> None:
        user = await _user_named(storage, name)
        await storage.rotate_token(user.id, token_hash=hash_token(token))

    _on_storage(database_url, rotate)
    click.echo(token)


@users.command("revoke")
@click.argument("name")
@_database_option
def revoke_token(name: str, database_url: str | None) -> None:
    """Revoke user NAME's token; it has none until rotated."""

    async def revoke(storage: Storage) -> None:
        await storage.revoke_token((await _user_named(storage, name)).id)

    _on_storage(database_url, revoke)
    click.echo(f"revoked the token of {name!r}")
