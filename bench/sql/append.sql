-- The raw statement behind "append": grow one of this client's answers (spread like the API's appends).
\set a :client_id + 1 + :clients * random(0, 99)
UPDATE messages SET content = content || 'a streamed chunk of about forty characters', version = version + 1
WHERE id = ('00000000-0000-0000-0001-' || lpad(:a::text, 12, '0'))::uuid;
