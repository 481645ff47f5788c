-- POST /webhook/trigger/{id}, round-robin over the task ids in WRK_IDS (one a line); each
-- wrk thread starts at its own offset so two threads do not hit one task together.
package.path = os.getenv("WRK_LUA_DIR") .. "/?.lua;" .. package.path
local report = require("report")

local ids = {}
for line in io.lines(os.getenv("WRK_IDS")) do
  ids[#ids + 1] = line
end

local counter = 0
local threads = 0
function setup(thread)
  thread:set("offset", threads * math.floor(#ids / 2))
  threads = threads + 1
end

function request()
  counter = counter + 1
  local id = ids[((offset or 0) + counter) % #ids + 1]
  return wrk.format("POST", "/webhook/trigger/" .. id, nil, "")
end

done = report.done
