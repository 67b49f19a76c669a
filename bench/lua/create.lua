-- POST a message into a random benchmark session. Arguments: api key, number of sessions.
package.path = package.path .. ";" .. debug.getinfo(1, "S").source:match("@(.*/)") .. "?.lua"
local common = require("common")
local key, sessions, body

function init(args)
  key, sessions = args[1], tonumber(args[2])
  body = '{"role":"user","content":"A benchmark question of a typical length, about forty words or so."}'
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end

function request()
  local path = "/sessions/" .. common.session_id(math.random(sessions)) .. "/messages"
  return wrk.format("POST", path, common.headers(key), body)
end
