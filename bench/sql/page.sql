-- The raw statement behind "read a page": 50 messages of one session, in order, and one more to tell whether
-- there is a next page (as the API reads it).
\set s random(1, :sessions)
SELECT * FROM messages WHERE session_id = ('00000000-0000-0000-0000-' || lpad(:s::text, 12, '0'))::uuid
ORDER BY created_at, id LIMIT 51;
