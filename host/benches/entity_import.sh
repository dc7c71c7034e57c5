#!/usr/bin/env bash
# The rate of `consentry entities import` on a large JSON Lines directory.
#
#   host/benches/entity_import.sh N [STORE]
#
# Writes N entities shaped like the bundled pack's (a third each:
# practitioners in St. Mary's, a care team and one of 100 groups;
# patients, some restricted or with objections; records filed under a
# patient, with labels, codes and a date), imports the pack's policies into
# STORE (default: a fresh SQLite directory; for PostgreSQL pass a
# postgres:// URL whose search_path names an empty schema), then times the
# entity import: parse, validate under the schema, write in one
# transaction. Each entity is new, so every one is written.
# CONSENTRY_BIN picks the binary (default: the release build).
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:?number of entities}
bin=${CONSENTRY_BIN:-${CARGO_TARGET_DIR:-target}/release/consentry}
[ -x "$bin" ] || cargo build --release -q -p consentry
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
store=${2:-$work/store}
python3 - "$n" "$work/entities.jsonl" <<'PY'
import json, sys
n, out = int(sys.argv[1]), sys.argv[2]
st_mary = {"type": "Organization", "id": "st-mary"}
def entity(i):
    kind = i % 3
    if kind == 0:
        return {"uid": {"type": "Practitioner", "id": f"dr-{i}"},
                "attrs": {"role": ("physician", "nurse", "pharmacist")[i % 7 % 3], "organization": st_mary},
                "parents": [st_mary, {"type": "CareTeam", "id": "cardiology"},
                            {"type": "Group", "id": f"team-{i % 100}"}]}
    if kind == 1:
        attrs = {"birthDate": f"{1940 + i % 80}-{1 + i % 12:02}-{1 + i % 28:02}"}
        if i % 10 == 1:
            attrs["restricted"] = True
        if i % 5 == 1:
            attrs["objections"] = ["research"]
        return {"uid": {"type": "Patient", "id": f"p-{i}"}, "attrs": attrs, "parents": []}
    patient = {"type": "Patient", "id": f"p-{i - 1}"}
    return {"uid": {"type": "Record", "id": f"obs-{i}"},
            "attrs": {"patient": patient, "resourceType": "Observation",
                      "labels": ["PSY"] if i % 20 == 2 else [], "confidentiality": "N",
                      "codes": [f"http://loinc.org|{i % 9000 + 1000}-7"],
                      "date": f"2026-{1 + i % 12:02}-{1 + i % 28:02}T09:30:00Z"},
            "parents": [patient]}
with open(out, "w") as f:
    for i in range(n):
        f.write(json.dumps(entity(i), separators=(",", ":")) + "\n")
PY
echo "entities.jsonl: $(du -h "$work/entities.jsonl" | cut -f1), $n entities"
# Not the write-back of the file just generated.
sync
"$bin" policies import policies --store "$store" >/dev/null 2>&1
measure=()
[ -x /usr/bin/time ] && measure=(/usr/bin/time -f "peak RSS: %M KiB")
t0=$(date +%s%N)
"${measure[@]}" "$bin" entities import "$work/entities.jsonl" --store "$store"
t1=$(date +%s%N)
echo "entities import: $(( (t1 - t0) / 1000000 )) ms, $(( n * 1000000000 / (t1 - t0 + 1) )) entities/s"
