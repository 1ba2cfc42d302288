-- wrk script for requests to several paths: each line of the file is a path, one space,
-- then the JSON body to POST there; lines are sent in turn. Prints the same JSON line as
-- wrk.lua. Arguments (after --): a path (unused: each line has its own), API key, file.

local requests_list = {}

function init(args)
  local key, file = args[2], args[3]
  local headers = { ["X-API-Key"] = key, ["Content-Type"] = "application/json" }
  for line in io.lines(file) do
    local path, body = line:match("^(%S+) (.*)$")
    requests_list[#requests_list + 1] = wrk.format("POST", path, headers, body)
  end
  counter = math.random(#requests_list)
end

function request()
  counter = counter % #requests_list + 1
  return requests_list[counter]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"status_errors":%d,"socket_errors":%d,' ..
    '"p50_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
