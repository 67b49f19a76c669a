"""The chat page at / and its files under /ui/: shipped in the package (chat_gateway/web/), nothing built at run
time and nothing loaded from elsewhere. The page speaks the /chat API with the key its user signs in with."""

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

WEB = Path(__file__).resolve().parent / "web"

# The page runs only its own scripts and talks only to this gateway; an answer's Markdown is sanitized, and this
# keeps anything that slipped through from loading or sending anything: no form posts anywhere (the page's own
# forms are handled by its script, or close a dialog, neither of which navigates), and no <base> moves where
# relative addresses go.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; form-action 'none'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def page() -> FileResponse:
    """The chat page."""
    return FileResponse(WEB / "index.html", headers=PAGE_HEADERS)


def files() -> StaticFiles:
    """The page's scripts, styles and vendored libraries (chat_gateway/web/vendor/, by scripts/vendor_web.sh)."""
    return StaticFiles(directory=WEB)
