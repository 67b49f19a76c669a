"""Full-text search over complete messages (their text and the tools they name) and session titles.

PostgreSQL full-text search (GIN indexes) and SQLite FTS5 (tables kept by triggers) behind one API with
the same semantics: every word must match (case-insensitive, no stemming), results ordered by relevance,
then newest first.
"""

import re

from sqlalchemy import Uuid, text
from sqlalchemy.orm import Session

from persistence.models import UTCDateTime
from persistence.pagination import decode_cursor, encode_cursor
from shared import BadRequest, ErrorCode, Page, SearchHit

_ORDER = "ORDER BY rank DESC, created_at DESC, kind, session_id, message_id"

# As indexed (migration 0008): the same expression, or the index is not used.
_MESSAGE_WORDS = "m.content || ' ' || coalesce(m.tool_names, '')"

_POSTGRESQL = """
WITH query AS (SELECT to_tsquery('simple', :terms) AS q),
hits AS (
    SELECT 'message' AS kind, m.session_id, m.id AS message_id, s.title, m.role, {message_words} AS body,
           ts_rank(to_tsvector('simple', {message_words}), query.q) AS rank, m.created_at
    FROM messages m JOIN sessions s ON s.id = m.session_id, query
    WHERE m.status = 'complete' AND to_tsvector('simple', {message_words}) @@ query.q {user_filter}
    UNION ALL
    SELECT 'session', s.id, NULL, s.title, NULL, s.title,
           ts_rank(to_tsvector('simple', s.title), query.q), s.created_at
    FROM sessions s, query
    WHERE to_tsvector('simple', s.title) @@ query.q {user_filter}
),
page AS (SELECT * FROM hits {order} LIMIT :limit OFFSET :offset)
SELECT kind, session_id, message_id, title, role, rank, created_at,
       ts_headline('simple', body, (SELECT q FROM query),
                   'StartSel=**, StopSel=**, MaxWords=24, MinWords=8, MaxFragments=2') AS snippet
FROM page {order}
"""

_SQLITE = """
SELECT * FROM (
    SELECT 'message' AS kind, m.session_id, m.id AS message_id, s.title, m.role,
           -bm25(messages_fts) AS rank, m.created_at,
           snippet(messages_fts, -1, '**', '**', '...', 24) AS snippet
    FROM messages_fts JOIN messages m ON m.rowid = messages_fts.rowid JOIN sessions s ON s.id = m.session_id
    WHERE messages_fts MATCH :terms {user_filter}
    UNION ALL
    SELECT 'session', s.id, NULL, s.title, NULL, -bm25(sessions_fts), s.created_at,
           highlight(sessions_fts, 0, '**', '**')
    FROM sessions_fts JOIN sessions s ON s.rowid = sessions_fts.rowid
    WHERE sessions_fts MATCH :terms {user_filter}
) {order} LIMIT :limit OFFSET :offset
"""


def _words(q: str) -> list[str]:
    words = re.findall(r"\w+", q)
    if not words:
        raise BadRequest("q must contain at least one word", code=ErrorCode.INVALID_QUERY)
    return words[:32]


def search(
    db: Session, q: str, *, limit: int, user_id: str | None = None, cursor: str | None = None
) -> Page[SearchHit]:
    words = _words(q)
    offset = decode_cursor(cursor, int)[0] if cursor else 0
    assert isinstance(offset, int)
    postgresql = db.get_bind().dialect.name == "postgresql"
    # Every word must match: quoted terms joined by AND (PostgreSQL) or by a space (FTS5).
    terms = " & ".join(f"'{w}'" for w in words) if postgresql else " ".join(f'"{w}"' for w in words)
    sql = (_POSTGRESQL if postgresql else _SQLITE).format(
        user_filter="AND s.user_id = :user_id" if user_id is not None else "",
        order=_ORDER,
        message_words=_MESSAGE_WORDS,
    )
    statement = text(sql).columns(session_id=Uuid(), message_id=Uuid(), created_at=UTCDateTime())
    params = {"terms": terms, "limit": limit + 1, "offset": offset} | (
        {"user_id": user_id} if user_id is not None else {}
    )
    rows = db.execute(statement, params).mappings().all()
    next_cursor = encode_cursor(offset + limit) if len(rows) > limit else None
    return Page[SearchHit](items=[dict(row) for row in rows[:limit]], next_cursor=next_cursor)
