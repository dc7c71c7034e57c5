-- wrk script: one /v1/plan per request: Dr. Weber's reads of p-100's records under the README consent.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"principal":"Practitioner::\\"dr-weber\\"","action":"Action::\\"read\\"","resource_type":"Record","patient":"Patient::\\"p-100\\"","context":{"purpose":"TREAT"}}'
