-- The raw statement behind "create message": the API's own one-row INSERT (persistence/services/messages.py,
-- _insert_statement), every column given, a replay told apart by ON CONFLICT and the RETURNING.
\set s random(1, :sessions)
INSERT INTO messages (id, session_id, role, content, context, status, error, rating, model, finish_reason, usage,
                      options, prompt, attempts, version, lease_owner, lease_expires_at, sent_at, created_at,
                      updated_at)
VALUES (gen_random_uuid(), ('00000000-0000-0000-0000-' || lpad(:s::text, 12, '0'))::uuid, 'user',
        'A benchmark question of a typical length, about forty words or so.', NULL, 'complete', NULL, NULL, NULL,
        NULL, NULL, NULL, NULL, 0, 1, NULL, NULL, now(), now(), now())
ON CONFLICT DO NOTHING RETURNING messages.id;
