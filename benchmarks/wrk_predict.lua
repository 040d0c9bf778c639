-- wrk script for benchmarks/web_load.py --no-backoff: POST /predict of raw JPEG bodies, rotating over
-- the files named after `--`, and retrying at once whatever the answer (no Retry-After honoured).
--
--   wrk -t200 -c200 -d20s --timeout 30s -s benchmarks/wrk_predict.lua http://127.0.0.1:8000 -- a.jpg b.jpg
--
-- Run with as many threads as connections (-t = -c): each thread then holds one connection, so its
-- request() and response() strictly alternate and the time between them is that request's latency.
-- wrk's own latency figures mix the 503s in; this script keeps the latency of accepted (200) answers.
-- done() prints one line, "WRK_RESULT {json}", that web_load.py parses.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } wrk_timespec;
int clock_gettime(int clock_id, wrk_timespec *tp);
]]
local ts = ffi.new("wrk_timespec")
local function now_ms()
   ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
   return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local threads = {}

function setup(thread)
   thread:set("id", #threads) -- threads start at different photos
   table.insert(threads, thread)
end

local requests, next_request, started = {}, 1, nil
statuses, accepted_ms = {}, {}

function init(args)
   for _, path in ipairs(args) do
      local f = assert(io.open(path, "rb"))
      local body = f:read("*a")
      f:close()
      table.insert(requests, wrk.format("POST", "/predict", { ["Content-Type"] = "image/jpeg" }, body))
   end
   assert(#requests > 0, "name the JPEG files after --")
   next_request = (wrk.thread:get("id") or 0) % #requests + 1
end

function request()
   local r = requests[next_request]
   next_request = next_request % #requests + 1
   started = now_ms()
   return r
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
   if status == 200 and started then
      table.insert(accepted_ms, now_ms() - started)
   end
   started = nil
end

function done(summary, latency, reqs)
   local counts, lat = {}, {}
   for _, t in ipairs(threads) do
      for status, n in pairs(t:get("statuses")) do
         counts[status] = (counts[status] or 0) + n
      end
      for _, ms in ipairs(t:get("accepted_ms")) do
         table.insert(lat, string.format("%.2f", ms))
      end
   end
   local codes = {}
   for status, n in pairs(counts) do
      table.insert(codes, string.format('"%d": %d', status, n))
   end
   local e = summary.errors
   io.write(string.format('WRK_RESULT {"duration_s": %.3f, "statuses": {%s}, "accepted_ms": [%s], ' ..
      '"errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}}\n',
      summary.duration / 1e6, table.concat(codes, ", "), table.concat(lat, ", "),
      e.connect, e.read, e.write, e.timeout))
end
