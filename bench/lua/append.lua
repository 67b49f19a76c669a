-- Each wrk thread (one connection each) appends to its own answers, tracking the offset it is told.
-- After 100 chunks (about 4 KiB, a typical answer) it moves on to its next answer.
-- Arguments: api key, number of sessions (unused), number of threads, answers to skip per thread
-- (so the warm-up and the measured run never append to the same answer).
package.path = package.path .. ";" .. debug.getinfo(1, "S").source:match("@(.*/)") .. "?.lua"
local common = require("common")
local counter = 1
local key, clients, skip, answer, path, offset, chunks
local text = "a streamed chunk of about forty characters"

function setup(thread)
  thread:set("number", counter)
  counter = counter + 1
end

local function next_answer()
  answer = answer and answer + clients or number + clients * skip
  path = "/messages/" .. common.message_id(answer) .. "/append"
  offset, chunks = 0, 0
end

function init(args)
  key, clients, skip = args[1], tonumber(args[3]), tonumber(args[4] or "0")
  next_answer()
end

function request()
  return wrk.format("POST", path, common.headers(key), '{"offset":' .. offset .. ',"text":"' .. text .. '"}')
end

function response(status, headers, body)
  offset = tonumber(body:match('"length":(%d+)')) or offset
  chunks = chunks + 1
  if chunks >= 100 then
    next_answer()
  end
end
