-- GET the first page (50) of the benchmark user's sessions. Arguments: api key.
package.path = package.path .. ";" .. debug.getinfo(1, "S").source:match("@(.*/)") .. "?.lua"
local common = require("common")
local key

function init(args)
  key = args[1]
end

function request()
  return wrk.format("GET", "/sessions?user_id=bench&limit=50", common.headers(key))
end
