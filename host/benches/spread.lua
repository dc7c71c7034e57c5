-- wrk script: /v1/is_authorized for a practitioner drawn at random from
-- dr-0 … dr-(N-1) (N from the environment, SPREAD), so that the working set
-- is far larger than one principal's slice: what fills a bounded entity cache.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local spread = tonumber(os.getenv("SPREAD") or "100000")

request = function()
  local who = math.random(0, spread - 1)
  local body = '{"principal":"Practitioner::\\"dr-' .. who ..
    '\\"","action":"Action::\\"read\\"","resource":"Record::\\"obs-1\\"","context":{"purpose":"TREAT"}}'
  return wrk.format(nil, nil, nil, body)
end
