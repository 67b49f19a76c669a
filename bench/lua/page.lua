-- GET a page of 50 messages of a random benchmark session. Arguments: api key, number of sessions.
package.path = package.path .. ";" .. debug.getinfo(1, "S").source:match("@(.*/)") .. "?.lua"
local common = require("common")
local key, sessions

function init(args)
  key, sessions = args[1], tonumber(args[2])
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end

function request()
  local path = "/sessions/" .. common.session_id(math.random(sessions)) .. "/messages?limit=50"
  return wrk.format("GET", path, common.headers(key))
end
