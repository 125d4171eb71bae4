"""The FastAPI application (`api.main:app`): lifecycle and inventory endpoints behind API keys.

Settings are read when the app starts (lifespan), never at import; tests build their own app with
`create_app(state)`.
"""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from starlette.responses import FileResponse, HTMLResponse, JSONResponse

from api import errors
from api.auth import ApiKeyMiddleware
from api.errors import NotDocumentedError
from api.routes import inventory, returns
from api.state import AppState

DOCS_STATIC = "/docs-static"
DOCS_ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
DOCS_ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")

DESCRIPTION = """Returns intelligence for omnichannel retailers.

Every `/v1` endpoint needs an API key (`Authorization: Bearer rk_...` or `X-API-Key`) with the scope the
endpoint names: `returns:read`, `returns:write`, `review` or `admin`. POSTs accept an `Idempotency-Key`.
"""


def engine_for(url: str, *, scoring: bool = False):
    """An API process's engine on `url`: for its commands and reads, or (`scoring`) for its scores."""
    from oms.db import make_engine

    if url.startswith("sqlite"):
        return make_engine(url)
    if scoring:
        # scoring's reads only go through `oms.driver`, which keeps their prepared statements itself;
        # a process serves one batch at a time (on its event loop), so a small pool is enough.
        # (RECOUP_SCORING_PIPELINE=psycopg: psycopg's own pipeline and prepared statements instead)
        from oms.settings import get_settings

        driver_prepares = get_settings().scoring_pipeline == "driver"
        return make_engine(url, driver_prepares=driver_prepares, pool_size=2, max_overflow=2)
    return make_engine(url, pool_size=20, max_overflow=20)


def _state_from_settings() -> AppState:
    from api.scoring import ModelHolder, registry_loader
    from api.serving_log import ServingLogWriter
    from oms.policy import load_policy
    from oms.settings import get_settings

    settings = get_settings()
    engine = engine_for(settings.database_url)
    holder = ModelHolder(
        registry_loader(settings.mlflow_tracking_uri, settings.mlflow_artifact_root),
        interval=settings.model_refresh_seconds,
    )
    holder.start()
    state = AppState(
        engine=engine,
        policy=load_policy(settings.policy_path),
        serve_docs=settings.serves_api_docs,
        models=holder,
        serving_log=ServingLogWriter(engine),
        score_max_batch=settings.score_max_batch,
        score_batch_wait=settings.score_batch_wait_ms / 1000,
        read_engine=(
            engine_for(settings.scoring_database_url, scoring=True) if settings.scoring_database_url else None
        ),
        # on PostgreSQL, a second pool on the state database for the scores' reads (SQLite: the engine)
        score_engine=(
            None
            if settings.database_url.startswith("sqlite")
            else engine_for(settings.database_url, scoring=True)
        ),
    )
    chooser = _recovery_chooser(holder)
    if chooser is not None:
        state.chooser = chooser
    return state


def _recovery_chooser(holder):
    """Route dispositions with the recovery champion when there is one (static table otherwise)."""
    from models.recovery import RecoveryChooser

    class Champion:
        name = "recovery_model"

        def choose(self, item):
            model = holder.current.recovery
            if model is None:
                from oms.disposition import StaticChooser

                return StaticChooser().choose(item)
            return RecoveryChooser(model).choose(item)

    return Champion()


def create_app(state: AppState | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        built = getattr(app.state, "recoup", None) is None
        if built:
            app.state.recoup = _state_from_settings()
            # what start-up built (models, settings, imports) lives as long as the process: frozen, the
            # collector's full passes stop walking it on the request path
            gc.collect()
            gc.freeze()
        yield
        state = app.state.recoup
        if state is not None and state.models is not None:
            state.models.stop()
        if state is not None and state.serving_log is not None:
            state.serving_log.close()
        if built and state is not None:  # the engines this process made (a caller's state keeps its own)
            for engine in (state.engine, state.read_engine, state.score_engine):
                if engine is not None:
                    engine.dispose()

    # the documentation routes are the app's own, so that whether they are served is a setting read at
    # start-up (RECOUP_API_DOCS; off in production by default), not at import
    app = FastAPI(
        title="Recoup",
        version="1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.recoup = state
    app.add_middleware(ApiKeyMiddleware)
    errors.install(app)
    app.include_router(returns.router)
    app.include_router(inventory.router)

    @app.get("/v1/ping", tags=["health"], openapi_extra={"x-required-scope": "returns:read"})
    async def ping() -> dict[str, bool]:
        """An authenticated no-op: the HTTP and auth floor under every other endpoint."""
        return {"ok": True}

    @app.get("/v1/status", tags=["health"], openapi_extra={"x-required-scope": "returns:read"})
    async def status() -> dict:
        """This API process: the champion versions it serves, how its scores were batched (see
        `score_max_batch`), and its serving log's backlog and drops. Each process answers for itself."""
        state = app.state.recoup
        champions = state.models.current if state.models is not None else None
        batcher = state.batchers.get("score")
        log_writer = state.serving_log
        return {
            "pid": os.getpid(),
            "models": {
                "fraud": champions.fraud.version if champions and champions.fraud else None,
                "recovery": champions.recovery.version if champions and champions.recovery else None,
                "load_error": champions.error if champions else None,
            },
            "scoring": {
                "scores": batcher.items if batcher else 0,
                "batches": batcher.batches if batcher else 0,
                "largest_batch": batcher.largest if batcher else 0,
                "max_batch": state.score_max_batch,
                "batch_wait_ms": state.score_batch_wait * 1000,
            },
            "serving_log": {
                "queued": len(log_writer.queue) if log_writer else 0,
                "dropped": log_writer.dropped if log_writer else 0,
            },
        }

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schema.setdefault("components", {})["securitySchemes"] = {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "rk_<key_id>.<secret>"}
            }
            schema["security"] = [{"apiKey": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    def documented() -> None:
        if not app.state.recoup.serve_docs:
            raise NotDocumentedError("the API documentation is not served here (RECOUP_API_DOCS is off)")

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_json() -> JSONResponse:
        documented()
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        documented()
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{DOCS_STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_STATIC}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        documented()
        return get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{app.title} API",
            redoc_js_url=f"{DOCS_STATIC}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_STATIC}/favicon.png",
            with_google_fonts=False,
        )

    @app.get(DOCS_STATIC + "/{name}", include_in_schema=False)
    async def docs_asset(name: str) -> FileResponse:
        """Swagger UI and ReDoc from the fastapi-offline package, so the docs work without internet."""
        documented()
        if name not in DOCS_ASSETS:
            raise NotDocumentedError(f"no documentation asset {name!r}")
        return FileResponse(DOCS_ASSETS_DIR / name, headers={"Cache-Control": "public, max-age=86400"})

    return app


app = create_app()
