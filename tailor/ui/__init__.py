"""``tailor ui``: a local web page for the whole workflow — generate with any composition, train with live progress,
evaluate, convert — built from the same declarations as the CLI and running the CLI's own commands.

The server (:mod:`tailor.ui.server`, starlette + uvicorn) answers the page; one warm worker process
(:mod:`tailor.ui.worker`) runs the queued jobs with ``tailor.cli.main``; every path stays inside one workspace
folder (:mod:`tailor.ui.paths`). See docs/ui.md.
"""

from __future__ import annotations

from pathlib import Path


def serve(base: str = "world", host: str = "127.0.0.1", port: int = 7860, workspace: str | Path = "tailor-ui") -> None:
    """Run the UI until interrupted (Ctrl-C)."""
    import uvicorn

    from tailor.ui.server import create_app

    app = create_app(workspace, base, host=host)
    print(f"tailor ui: http://{host}:{port}/  (workspace {app.state.workspace.root}, base {base})", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
