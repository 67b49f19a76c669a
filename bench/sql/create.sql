-- The raw statement behind "create message": a one-row INSERT.
\set s random(1, :sessions)
INSERT INTO messages (id, session_id, role, content, status, attempts, version, sent_at, created_at, updated_at)
VALUES (gen_random_uuid(), ('00000000-0000-0000-0000-' || lpad(:s::text, 12, '0'))::uuid, 'user',
        'A benchmark question of a typical length, about forty words or so.', 'complete', 0, 1, now(), now(), now());
