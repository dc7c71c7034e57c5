-- wrk script: one /v1/is_authorized decision per request (bundled pack, allowed by the README consent).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"principal":"Practitioner::\\"dr-weber\\"","action":"Action::\\"read\\"","resource":"Record::\\"obs-1\\"","context":{"purpose":"TREAT"}}'
