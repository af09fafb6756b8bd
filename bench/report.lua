-- wrk `done` hook shared by the benchmark scripts: prints one machine-readable line that
-- bench/run.sh parses (requests/s, p99 latency in microseconds, failures), so the figures do
-- not depend on wrk's human-readable units.

function done(summary, latency, requests)
  local e = summary.errors
  local failures = e.connect + e.read + e.write + e.status + e.timeout
  io.write(string.format(
    "BENCH rps=%.0f p99_us=%d p50_us=%d requests=%d bytes=%d failures=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(99.0),
    latency:percentile(50.0),
    summary.requests,
    summary.bytes,
    failures))
end
