-- wrk script: one patient-level search decision per request (it plans the records the search may return).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"principal":"Practitioner::\\"dr-weber\\"","action":"Action::\\"search\\"","resource":"Patient::\\"p-100\\"","context":{"purpose":"TREAT"}}'
