-- Heartbeat POSTs as `curl -d` sends them (application/x-www-form-urlencoded), rotating over
-- a fixed set of distinct hosts so that every request names a real (service, ip, port).
--
-- Used twice by bench/run.sh:
--   * as the heartbeat benchmark (one service, 1000 hosts, runs for wrk's -d);
--   * as the loader that registers hosts before a GET or RSS measurement: with
--     BENCH_STOP_AFTER=N wrk exits once N answers have arrived, which is every host
--     once when N equals the host count (requests are issued in order, one thread).
--
-- Environment:
--   BENCH_DIR             where report.lua lives
--   BENCH_SERVICE         service name (with BENCH_SERVICES=1), else the prefix of
--                         BENCH_SERVICES names "<prefix>-000", "<prefix>-001", ...
--   BENCH_SERVICES        number of services (default 1)
--   BENCH_HOSTS           hosts per service (default 1000)
--   BENCH_STOP_AFTER      stop after this many answers (default 0: run for -d)

dofile(os.getenv("BENCH_DIR") .. "/report.lua")

local prefix = os.getenv("BENCH_SERVICE") or "heartbeat-bench"
local services = tonumber(os.getenv("BENCH_SERVICES") or "1")
local hosts = tonumber(os.getenv("BENCH_HOSTS") or "1000")
local stop_after = tonumber(os.getenv("BENCH_STOP_AFTER") or "0")
local total = services * hosts
-- A 40-character git SHA, as deploy tooling sends it.
local revision = "4f2a9c1e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39"
local zones = { "us-east-1a", "us-east-1b", "us-east-1c" }

local function urlencode(s)
  return (s:gsub("[^%w%-%._~]", function(c)
    return string.format("%%%02X", string.byte(c))
  end))
end

local function service_name(s)
  if services == 1 then
    return prefix
  end
  return string.format("%s-%03d", prefix, s)
end

-- Host number i (0-based, over all services) as one ready-to-send request.
local function build(i)
  local s = math.floor(i / hosts)
  local h = i % hosts
  local ip = string.format("10.%d.%d.%d", s % 250, math.floor(h / 200), h % 200 + 1)
  local port = 8000 + h % 7
  local tags = string.format(
    '{"az":"%s","region":"us-east-1","instance_id":"i-0%016x"}',
    zones[h % 3 + 1], i + 1)
  local body = string.format(
    "ip=%s&port=%d&revision=%s&service_repo_name=%s&tags=%s",
    ip, port, revision, prefix, urlencode(tags))
  return wrk.format("POST", "/v1/registration/" .. service_name(s),
    { ["Content-Type"] = "application/x-www-form-urlencoded" }, body)
end

local cache = {}
local counter = 0

function request()
  local i = counter % total
  counter = counter + 1
  local r = cache[i]
  if r == nil then
    r = build(i)
    cache[i] = r
  end
  return r
end

-- Only defined for the loader: wrk skips parsing answers when `response` is nil. The loader
-- exits the whole process once done (wrk's thread:stop() would still sit out -d); a refused
-- heartbeat exits 1 so that run.sh stops instead of measuring a half-loaded registry.
if stop_after > 0 then
  local answered = 0
  function response(status, headers, body)
    if status ~= 200 then
      io.stderr:write("heartbeat answered " .. status .. ": " .. body .. "\n")
      os.exit(1)
    end
    answered = answered + 1
    if answered >= stop_after then
      os.exit(0)
    end
  end
end
