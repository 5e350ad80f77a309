-- wrk script for scripts/bench_peers.py: walk a list of URL paths in order.
--   wrk -t T ... -s walk.lua http://HOST:PORT -- LISTFILE T [OFFSET]
-- Thread i sends list entries OFFSET+i, OFFSET+i+T, OFFSET+i+2T, ... (0-based), so no
-- entry is sent twice until the list wraps; "repeats" counts requests past the end.
-- done() prints one BENCH line, with "next" = the OFFSET for a follow-up run.
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  paths = {}
  for line in io.lines(args[1]) do
    if #line > 0 then paths[#paths + 1] = line end
  end
  step = tonumber(args[2])
  offset = tonumber(args[3] or "0")
  sent = 0
  repeats = 0
end

function request()
  local g = offset + id + sent * step
  sent = sent + 1
  if g >= #paths then repeats = repeats + 1 end
  return wrk.format("GET", paths[(g % #paths) + 1])
end

function done(summary, latency, requests)
  local repeats_total, sent_max, offset0, step0 = 0, 0, 0, 1
  for _, t in ipairs(threads) do
    repeats_total = repeats_total + t:get("repeats")
    sent_max = math.max(sent_max, t:get("sent"))
    offset0, step0 = t:get("offset"), t:get("step")
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%.0f duration_us=%.0f bytes=%.0f connect=%.0f read=%.0f write=%.0f" ..
    " status=%.0f timeout=%.0f p50_us=%.0f p90_us=%.0f p99_us=%.0f max_us=%.0f" ..
    " mean_us=%.1f repeats=%.0f next=%.0f\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, repeats_total,
    offset0 + sent_max * step0))
end
