-- POST the same JSON body (WRK_BODY) on every request: JSON-RPC calls.
package.path = os.getenv("WRK_LUA_DIR") .. "/?.lua;" .. package.path
local report = require("report")

wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY")
wrk.headers["Content-Type"] = "application/json"

done = report.done
