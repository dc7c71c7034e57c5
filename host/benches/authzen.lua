-- wrk script: one AuthZEN evaluation per request (bundled pack).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"subject":{"type":"Practitioner","id":"dr-weber"},"action":{"name":"read"},"resource":{"type":"Record","id":"obs-1"},"context":{"purpose":"TREAT"}}'
