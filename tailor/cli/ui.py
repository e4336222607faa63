"""``tailor ui``: start the local web UI (``tailor/ui``; needs the ``ui`` extra: starlette, uvicorn)."""

from __future__ import annotations

import click

from tailor.errors import ConfigError


def make_ui_command() -> click.Command:
    def callback(base: str, host: str, port: int, workspace: str) -> None:
        try:
            import starlette  # noqa: F401
            import uvicorn  # noqa: F401
        except ImportError as e:
            raise ConfigError(
                f"tailor ui needs {e.name}; install it with pip install 'tailor-diffusion[ui]'."
            ) from None
        if not 0 < port < 65536:
            raise ConfigError(f"--port {port} is not a TCP port; pick one in 1-65535 (e.g. 7860).")
        from tailor.ui import serve

        serve(base=base, host=host, port=port, workspace=workspace)

    return click.Command(
        "ui",
        callback=callback,
        params=[
            click.Option(["--base"], default="world", help="Base model the page's jobs use (world, tiny, a folder)."),
            click.Option(["--port"], type=int, default=7860, help="TCP port.  [default: 7860]"),
            click.Option(
                ["--host"],
                default="127.0.0.1",
                help="Address to bind; the default answers this machine only (the page runs commands on it).",
            ),
            click.Option(
                ["--workspace"],
                default="tailor-ui",
                help="The one folder the page reads and writes (uploads, outputs, trainings).  [default: tailor-ui]",
            ),
        ],
        help="Start the local web UI: generate, train, evaluate and convert from a browser page.",
        short_help="Local web UI: generate, train, evaluate, convert.",
    )
