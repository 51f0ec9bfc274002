-- wrk script for bench/run: POSTs changeNotificationCollections shaped like
-- tests/fixtures/notification-created.json to the notification URL. Every
-- item carries a fresh random call id, so that the receiver cannot coalesce
-- duplicates. Environment:
--   BENCH_ITEMS         items per request (default 1)
--   BENCH_CLIENT_STATE  clientState of every item
--   BENCH_TENANT        tenantId of every item
--   BENCH_DELAY_MS      pause of each connection between its requests (default 0)
-- done() prints one "wrk-result" line with the figures bench/run parses.

local items = tonumber(os.getenv("BENCH_ITEMS") or "1")
local client_state = os.getenv("BENCH_CLIENT_STATE") or "cr-4b8e1f0c9d2a47e6b3c5a7d9e1f20384"
local tenant = os.getenv("BENCH_TENANT") or "2a37c3b7-f073-59a1-b249-42c4e33881c2"
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
local subscription = "feb91fbe-efd9-5607-b1bc-af06b720e001"

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

local function guid()
    return string.format("%08x-%04x-4%03x-%04x-%04x%08x",
        math.random(0, 0xffffffff), math.random(0, 0xffff), math.random(0, 0xfff),
        math.random(0x8000, 0xbfff), math.random(0, 0xffff), math.random(0, 0xffffffff))
end

local function item(id)
    return '{"subscriptionId":"' .. subscription .. '",' ..
        '"subscriptionExpirationDateTime":"2025-06-05T14:00:00+00:00",' ..
        '"changeType":"created",' ..
        '"resource":"communications/callRecords/' .. id .. '",' ..
        '"resourceData":{"@odata.type":"#Microsoft.Graph.callrecord",' ..
        '"@odata.id":"communications/callRecords/' .. id .. '","id":"' .. id .. '"},' ..
        '"clientState":"' .. client_state .. '",' ..
        '"tenantId":"' .. tenant .. '"}'
end

local thread_count = 0

function setup(thread)
    thread_count = thread_count + 1
    thread:set("seed", thread_count)
end

function init(args)
    -- Each wrk thread has its own Lua state, and setup() gave each a number.
    math.randomseed(os.time() * 1000 + (seed or 0))
end

function request()
    local parts = {}
    for i = 1, items do
        parts[i] = item(guid())
    end
    return wrk.format(nil, nil, nil, '{"value":[' .. table.concat(parts, ",") .. ']}')
end

if delay_ms > 0 then
    function delay()
        return delay_ms
    end
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "wrk-result requests=%d duration_us=%d p50_us=%d p99_us=%d max_us=%d " ..
        "connect_errors=%d read_errors=%d write_errors=%d status_errors=%d timeouts=%d\n",
        summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
        latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
