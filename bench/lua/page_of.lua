-- GET the newest page of 50 messages of one session (what a chat UI opens). Arguments: api key, session number.
package.path = package.path .. ";" .. debug.getinfo(1, "S").source:match("@(.*/)") .. "?.lua"
local common = require("common")
local key, path

function init(args)
  key = args[1]
  path = "/sessions/" .. common.session_id(tonumber(args[2])) .. "/messages?limit=50&order=desc"
end

function request()
  return wrk.format("GET", path, common.headers(key))
end
