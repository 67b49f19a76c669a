-- The raw statement behind "append": the API's own conditional UPDATE (persistence/services/answers.py,
-- _append_statement), on one of this client's answers (spread like the API's appends). pgbench cannot know
-- an answer's length, so the offset check `length(content) = :offset` is `length(content) >= 0`: the same work.
\set a :client_id + 1 + :clients * random(0, 99)
UPDATE messages SET content = content || 'a streamed chunk of about forty characters', version = version + 1,
    lease_expires_at = CASE WHEN status = 'in_progress' THEN now() + interval '30 seconds' ELSE lease_expires_at END,
    updated_at = now()
WHERE id = ('00000000-0000-0000-0001-' || lpad(:a::text, 12, '0'))::uuid AND length(content) >= 0 AND status != 'complete'
RETURNING id, length(content), version, status, lease_expires_at;
