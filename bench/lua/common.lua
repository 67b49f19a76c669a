-- Shared by the wrk scripts: ids are derived from integers, the same way the seeding and pgbench do.
local M = {}

function M.session_id(n)
  return string.format("00000000-0000-0000-0000-%012d", n)
end

function M.message_id(n)
  return string.format("00000000-0000-0000-0001-%012d", n)
end

function M.headers(key)
  return { ["x-api-key"] = key, ["content-type"] = "application/json" }
end

return M
