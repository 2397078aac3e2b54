-- wrk script: POST bodies read from a file (used in turn), count every non-2xx answer and the
-- model_version of each answer, and print one JSON line.
--   wrk -t1 -c16 -d15s -s benchmarks/wrk_post.lua http://127.0.0.1:8000/predict -- bodies.jsonl
-- A file ending in .jsonl (or anything but .rec): JSON bodies, one per line. A file ending in
-- .rec: binary bodies with headers of their own (benchmarks/loadgen.py write_records): per
-- record a line "<number of headers> <body length>", a line "Name: value" per header, then the
-- body's bytes.
-- Output line: BENCH_JSON {...}; latencies in microseconds.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

local requests = {}
local n = 0
local i = 0
non2xx = 0
status_counts = {}
versions = {}

local function read_lines(path)
  for line in io.lines(path) do
    if #line > 0 then
      n = n + 1
      requests[n] = wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, line)
    end
  end
end

local function read_records(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  local pos = 1
  while pos <= #data do
    local _, e, nh, blen = string.find(data, "^(%d+) (%d+)\n", pos)
    if not e then
      error(path .. ": no record header at byte " .. pos)
    end
    pos = e + 1
    local headers = {}
    for _ = 1, tonumber(nh) do
      local _, e2, name, value = string.find(data, "^([^:\n]+): ([^\n]*)\n", pos)
      if not e2 then
        error(path .. ": bad header line at byte " .. pos)
      end
      headers[name] = value
      pos = e2 + 1
    end
    local len = tonumber(blen)
    if pos + len - 1 > #data then
      error(path .. ": record body runs past the end of the file")
    end
    n = n + 1
    requests[n] = wrk.format("POST", nil, headers, string.sub(data, pos, pos + len - 1))
    pos = pos + len
  end
end

function init(args)
  local path = args[1]
  if string.sub(path, -4) == ".rec" then
    read_records(path)
  else
    read_lines(path)
  end
  if n == 0 then
    error("no request bodies in " .. tostring(path))
  end
  -- each thread starts at another body
  i = math.random(n) - 1
end

function request()
  i = (i % n) + 1
  return requests[i]
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    local key = tostring(status)
    status_counts[key] = (status_counts[key] or 0) + 1
  else
    local v = string.match(body, '"model_version"%s*:%s*"([^"]*)"')
    if v then
      versions[v] = (versions[v] or 0) + 1
    end
  end
end

local function encode_counts(tbl)
  local parts = {}
  for k, v in pairs(tbl) do
    table.insert(parts, string.format('"%s":%d', k, v))
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

local function merge(into, from)
  for k, v in pairs(from) do
    into[k] = (into[k] or 0) + v
  end
end

function done(summary, latency, requests)
  local total_non2xx = 0
  local all_status = {}
  local all_versions = {}
  for _, t in ipairs(threads) do
    total_non2xx = total_non2xx + (t:get("non2xx") or 0)
    merge(all_status, t:get("status_counts") or {})
    merge(all_versions, t:get("versions") or {})
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"non2xx":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"lat_mean_us":%.1f,"lat_max_us":%.1f,"p50_us":%.1f,"p90_us":%.1f,"p95_us":%.1f,' ..
    '"p99_us":%.1f,"status_counts":%s,"versions":%s}\n',
    summary.requests, summary.duration, summary.bytes, total_non2xx,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(95), latency:percentile(99),
    encode_counts(all_status), encode_counts(all_versions)))
end
