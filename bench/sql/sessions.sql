-- The raw statement behind "list sessions": a user's first page, favorites first, newest first.
SELECT * FROM sessions WHERE user_id = 'bench' ORDER BY is_favorite DESC, updated_at DESC, id DESC LIMIT 50;
