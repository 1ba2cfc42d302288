-- wrk script of the benchmark: POST bodies read from a file (one per line) in turn, then
-- print one JSON line with the totals and latency percentiles (microseconds).
-- Arguments (after --): path, API key, bodies file. With the path "-", each line is a
-- path, one space, then the body to POST there (requests to several paths).

local requests_list = {}

function init(args)
  local path, key, file = args[1], args[2], args[3]
  local headers = { ["X-API-Key"] = key, ["Content-Type"] = "application/json" }
  for line in io.lines(file) do
    local to, body = path, line
    if path == "-" then
      to, body = line:match("^(%S+) (.*)$")
    end
    requests_list[#requests_list + 1] = wrk.format("POST", to, headers, body)
  end
  -- Each thread starts at its own place in the list.
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
