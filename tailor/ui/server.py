"""The web app (starlette): the page, its JSON API and the workspace's files.

Every request returns at once: long work is queued to the worker (:mod:`tailor.ui.jobs`). A user error (a bad
option, a path outside the workspace, a broken upload) answers ``400 {"error": one sentence}``, which the page shows.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from tailor.errors import TailorError
from tailor.ui import catalog, commands, uploads
from tailor.ui.forms import command_line
from tailor.ui.jobs import Job, Runner
from tailor.ui.paths import Workspace

STATIC = Path(__file__).parent / "static"


def _error(e: Exception, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": str(e)}, status_code=status)


def cross_site(request: Request) -> bool:
    """A POST sent by another site's page (its ``Origin`` is not this server): refused, so a page elsewhere in the
    browser cannot queue jobs here."""
    origin = request.headers.get("origin")
    return request.method == "POST" and origin is not None and urlsplit(origin).netloc != request.headers.get("host")


def allowed_hosts(host: str) -> list[str]:
    """The ``Host`` headers answered: this machine's names when bound to loopback (a DNS-rebinding page gets
    nothing), any when the user bound every interface."""
    if host in ("0.0.0.0", "::", ""):
        return ["*"]
    return sorted({"127.0.0.1", "localhost", "::1", host})


def api(fn):
    """A JSON endpoint: a :class:`TailorError` becomes ``400 {"error": message}``."""

    async def endpoint(request: Request) -> Response:
        if cross_site(request):
            return _error(PermissionError("a request from another site was refused; use the page itself."), 403)
        try:
            body = await request.json() if request.method == "POST" and request.headers.get("content-length") else {}
            if not isinstance(body, dict):
                raise json.JSONDecodeError("not an object", "", 0)
            result = await run_in_threadpool(fn, request, body)
        except TailorError as e:
            return _error(e)
        except json.JSONDecodeError:
            return _error(ValueError("the request is not a JSON object; reload the page."))
        return result if isinstance(result, Response) else JSONResponse(result)

    return endpoint


def create_app(
    workspace: str | Path, base: str = "world", runner: Runner | None = None, host: str = "127.0.0.1"
) -> Starlette:
    ws = Workspace(workspace)
    runner = runner or Runner(ws, base)

    def info(request, body):
        return {
            "base": base,
            "workspace": str(ws.root),
            "methods": catalog.methods(),
            "generate": catalog.generate_schema(),
            "shipped": catalog.shipped(),
            "subjects": catalog.subjects(),
            "tools": catalog.tools_schema(),
        }

    def train_schema(request, body):
        return catalog.train_schema(request.query_params.get("method", ""), base)

    def trained(request, body):
        return catalog.trained(ws)

    def submit(kind: str, build):
        def endpoint(request, body):
            cmds, out = build(body)
            line = " ; ".join(command_line(c, ws) for c in cmds)
            if body.get("dry"):
                return {"command": line}
            job = runner.submit(kind, cmds, out, command=line, form=body)
            return {"job": job.summary(), "command": line}

        return endpoint

    def jobs(request, body):
        return [j.summary() for j in reversed(runner.jobs.values())]

    def job_detail(request, body):
        job = _job(request)
        log = runner.log(job, 200_000)
        return {
            "job": job.summary(),
            "log": log[-8000:],
            "json": _json_output(log) if job.kind == "tool" else None,
            "progress": runner.progress(job),
            "error": _last_error(runner.log(job, 4000)),
            "results": results(ws, job),
        }

    def cancel(request, body):
        return {"job": runner.cancel(_job(request).id).summary()}

    def _job(request) -> Job:
        job = runner.jobs.get(request.path_params["id"])
        if job is None:
            raise TailorError(f"no job {request.path_params['id']!r}; reload the page.")
        return job

    def listing(request, body):
        folder = ws.path(request.query_params.get("folder") or ".", "folder")
        if not folder.is_dir():
            return []
        return [
            {"name": p.name, "path": ws.relative(p), "dir": p.is_dir()}
            for p in sorted(folder.iterdir())
            if not p.name.startswith(".") and not p.is_symlink()  # a link may point out of the workspace
        ]

    async def upload(request: Request) -> Response:
        if cross_site(request):
            return _error(PermissionError("a request from another site was refused; use the page itself."), 403)
        try:
            data = await _capped_body(request, request.query_params.get("name", ""))
            q = request.query_params
            path = await run_in_threadpool(uploads.save, ws, q.get("folder", "uploads"), q.get("name", ""), data)
        except TailorError as e:
            return _error(e)
        return JSONResponse({"path": path})

    async def files(request: Request) -> Response:
        try:
            path = ws.path(request.path_params["path"], "file")
        except TailorError as e:
            return _error(e, 403)
        if not path.is_file():
            return _error(FileNotFoundError(f"{request.path_params['path']} does not exist in the workspace."), 404)
        return FileResponse(path, headers={"Cache-Control": "no-store"})

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    routes = [
        Route("/", index),
        Route("/api/info", api(info)),
        Route("/api/train-schema", api(train_schema)),
        Route("/api/trained", api(trained)),
        Route(
            "/api/generate", api(submit("generate", lambda b: commands.generate_args(ws, base, b))), methods=["POST"]
        ),
        Route("/api/train", api(submit("train", lambda b: commands.train_args(ws, base, b))), methods=["POST"]),
        Route("/api/tool", api(submit("tool", lambda b: commands.tool_args(ws, b))), methods=["POST"]),
        Route("/api/jobs", api(jobs)),
        Route("/api/jobs/{id}", api(job_detail)),
        Route("/api/jobs/{id}/cancel", api(cancel), methods=["POST"]),
        Route("/api/files", api(listing)),
        Route("/api/upload", upload, methods=["POST"]),
        Route("/files/{path:path}", files),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        runner.close()

    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(host))]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=middleware)
    app.state.runner, app.state.workspace = runner, ws
    return app


async def _capped_body(request: Request, name: str) -> bytes:
    """The upload's bytes, refused once past :data:`uploads.MAX_BYTES` (never read whole into memory first)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > uploads.MAX_BYTES:
            raise uploads.too_large(name)
        chunks.append(chunk)
    return b"".join(chunks)


def _last_error(log: str) -> str | None:
    lines = [line[len("error:") :].strip() for line in log.splitlines() if line.startswith("error:")]
    return lines[-1] if lines else None


def _json_output(log: str) -> Any:
    """The JSON object a ``--json`` command printed (the first line that opens one), or None."""
    at = log.find("\n{")
    if at < 0:
        return None
    try:
        return json.JSONDecoder().raw_decode(log[at + 1 :])[0]
    except json.JSONDecodeError:
        return None


def _records(log: Path) -> list[dict]:
    """The training's ``log.jsonl`` records (a line being written is skipped)."""
    records = []
    for line in log.read_text().splitlines() if log.is_file() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def results(ws: Workspace, job: Job) -> dict[str, Any]:
    """What a finished or running job has written: images with their settings, training records and samples,
    the JSON a tool printed, and images in its output folder."""
    out: dict[str, Any] = {}
    folder = ws.root / job.out if job.out else None
    if folder is None or not folder.is_dir():
        return out
    rel = job.out
    gen = folder / "generation.json"
    if gen.is_file():
        record = json.loads(gen.read_text())
        out["images"] = [f"{rel}/{r['file']}" for r in record.get("images", [])]
        out["generation"] = f"{rel}/generation.json"
    if job.kind == "train":
        log = folder / "log.jsonl"
        out["records"] = _records(log)
        out["samples"] = [f"{rel}/samples/{p.name}" for p in sorted((folder / "samples").glob("*.png"))]
        out["artifact"] = (folder / "tailor.json").is_file()
        out["folder"] = rel
    if job.kind == "tool":
        pngs = sorted(folder.rglob("*.png"), key=lambda p: (not p.name.startswith("grid"), p))  # contact sheets first
        out["images"] = [ws.relative(p) for p in pngs[:24]]
    return out
