-- wrk script: 100 decisions per /v1/is_authorized/batch request (bundled pack).
local one = '{"principal":"Practitioner::\\"dr-weber\\"","action":"Action::\\"read\\"","resource":"Record::\\"obs-1\\"","context":{"purpose":"TREAT"}}'
local items = {}
for i = 1, 100 do items[i] = one end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"requests":[' .. table.concat(items, ",") .. ']}'
