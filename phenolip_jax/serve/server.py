"""The serve stage: a FastAPI app (the page and a JSON API) around one Engine, run by uvicorn on localhost.

    GET  /                             the page (serve/page.py)
    GET  /api/info                     the run, candidate count, organ systems, limits
    POST /api/predict                  multipart: files (one or more images: a case), note, organ_system
    GET  /api/cases/{id}               a recent case's result
    GET  /api/cases/{id}/download      the case as a file (serve/download.py)

Every refusal is JSON {"error": message, "files": [{"name", "error"}]} with a 4xx status, and the page shows the
message; a bad upload never stops the server.
"""
from __future__ import annotations

import socket
import sys
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from phenolip_jax import config_lib
from phenolip_jax.serve import download, page
from phenolip_jax.serve.engine import MB, CaseError, Engine, Upload

MAX_NOTE_BYTES = 100_000  # a note is a short free text (starlette's own part limit is 1 MB)


def _error(message: str, status: int, files: Any = ()) -> JSONResponse:
    return JSONResponse(dict(error=message, files=list(files)), status_code=status)


async def _read_uploads(form: Any, max_bytes: int) -> list[Upload]:
    """The form's `files` parts; a file over the limit is not read (its size alone says it is refused)."""
    uploads = []
    for part in form.getlist("files"):
        if not isinstance(part, UploadFile):
            raise CaseError("the 'files' field must carry files (multipart/form-data uploads), not text")
        name = part.filename or "(unnamed)"
        size = part.size if part.size is not None else -1
        data = b"" if size > max_bytes else await part.read()
        uploads.append(Upload(name, data, size))
    return uploads


def create_app(engine: Engine) -> FastAPI:
    """The app serving one loaded engine."""
    # No /docs page: FastAPI's fetches its scripts from a CDN, and this server works offline.
    app = FastAPI(title="phenolip_jax", summary="Top HPO terms for a case's images", docs_url=None,
                  redoc_url=None, openapi_url="/api/openapi.json")
    # The whole request is refused before it is read when it could not hold an acceptable case (a few KB of
    # multipart headers and the note on top of max_images files at the limit).
    max_request = int(engine.cfg.max_images) * engine.max_bytes + MAX_NOTE_BYTES + MB

    @app.exception_handler(CaseError)
    async def case_error(_: Request, e: CaseError) -> JSONResponse:
        return _error(str(e), e.status, e.files)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page.PAGE

    @app.get("/api/info")
    async def info() -> dict[str, Any]:
        return engine.info()

    @app.post("/api/predict")
    async def predict_case(request: Request) -> JSONResponse:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_request:
            return _error(f"upload of {int(length) / MB:.1f} MB is over the limit of {max_request / MB:g} MB per "
                          f"case ({engine.cfg.max_images} images of at most {engine.cfg.max_upload_mb:g} MB)", 413)
        try:
            form = await request.form()  # starlette's own limits are wide; predict_case names max_images
        except Exception as e:  # noqa: BLE001 - starlette raises HTTPException / MultiPartException for bad bodies
            return _error(f"unreadable upload: {getattr(e, 'detail', None) or e}", 400)
        note = form.get("note") or ""
        if not isinstance(note, str) or len(note.encode()) > MAX_NOTE_BYTES:
            return _error(f"the note must be text of at most {MAX_NOTE_BYTES // 1000} KB", 400)
        organ = form.get("organ_system") or ""
        uploads = await _read_uploads(form, engine.max_bytes)
        case = await run_in_threadpool(engine.predict_case, uploads, note, str(organ))
        return JSONResponse(dict(case, download=f"/api/cases/{case['case_id']}/download"))

    @app.get("/api/cases/{case_id}")
    async def get_case(case_id: str) -> dict[str, Any]:
        return engine.case(case_id)

    @app.get("/api/cases/{case_id}/download")
    async def download_case(case_id: str) -> Response:
        name, media_type, body = download.case_download(engine.case(case_id))
        return Response(body, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{name}"'})

    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port); port 0 = any free port. A port in use is a one-line config error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
    except OSError as e:
        sock.close()
        raise config_lib.UserError(f"config.port={port} on config.host={host!r}: cannot listen ({e.strerror}); "
                                   "choose another port, or 0 for any free one") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    """http://host:port/ of a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def run(cfg: Any, workdir: str) -> None:
    """Loads the run, then serves the page until Ctrl-C."""
    sock = bind(cfg.host, cfg.port)  # before the model loads: a busy port fails at once
    engine = Engine(cfg, workdir)
    print(f"serve: {engine.model.path}: {len(engine.ids)} candidate phenotypes, "
          f"{'calibrated' if engine.calibrated_by else 'uncalibrated'} (T={engine.temperature:.4g}); "
          f"open {url_of(sock)} (Ctrl-C stops)", flush=True)
    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"serve: WARNING listening on {cfg.host}: the page has no login; anyone who reaches this port can "
              "upload images", file=sys.stderr, flush=True)
    server = uvicorn.Server(uvicorn.Config(create_app(engine), log_level="info"))
    server.run(sockets=[sock])
