"""The web page for the people who run stenod: jobs, progress, errors, transcripts with
their recordings, corrections, uploads and status, served by the daemon's HTTP server."""

from fastapi import APIRouter

from stenod.adapters.http.page import session, speakers, transcripts, views

router = APIRouter(include_in_schema=False)
router.include_router(session.router)
router.include_router(views.router)
router.include_router(transcripts.router)
router.include_router(speakers.router)
static = views.static

__all__ = ["router", "static"]
