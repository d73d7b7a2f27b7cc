"""The fleet benchmark of `cargo xtask bench` (xtask/src/bench/fleet.rs).

Reads a JSON request {"sources": [DIR...], "hosts": N, "out": DIR,
"queries": FILE, "runs": R} from the file named by argv[1]. Each source DIR
holds the Parquet tables `nixtrace export` wrote of one trace. For each of
N hosts, every source's tables are copied into OUT/host-NNNN/ with a trace
id of their own (the md5 of the original and the host's name, 32 hex
digits as a real id is) and the host's name in `traces`: N x len(sources)
traces, the sources' boots repeated on every host in their order. Then the
views and queries of FILE (docs/fleet.sql) run R times each, in OUT's
parent directory, as docs/fleet.md runs them; prints {"traces": T,
"bytes": B, "queries": {NAME: {"seconds": [..], "rows": ROWS}}} as JSON.
"""

import json
import os
import sys
import time

import duckdb

request = json.load(open(sys.argv[1]))
out = request["out"]
con = duckdb.connect()
tables = sorted(
    name[: -len(".parquet")]
    for name in os.listdir(request["sources"][0])
    if name.endswith(".parquet")
)
traces = 0
for host in range(request["hosts"]):
    name = f"host-{host:04d}"
    directory = os.path.join(out, name)
    os.makedirs(directory, exist_ok=True)
    for table in tables:
        # Every source's rows of the table, in one file per host and table.
        selects = []
        for source in request["sources"]:
            path = os.path.join(source, f"{table}.parquet").replace("'", "''")
            replaced = f"md5(trace_id || '{name}') AS trace_id"
            if table == "traces":
                replaced += f", '{name}' AS host"
            selects.append(f"SELECT * REPLACE ({replaced}) FROM '{path}'")
        target = os.path.join(directory, f"{table}.parquet").replace("'", "''")
        con.execute(
            f"COPY ({' UNION ALL '.join(selects)}) TO '{target}' (FORMAT parquet, COMPRESSION snappy)"
        )
    traces += len(request["sources"])

size = sum(
    os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(out) for f in files
)
queries = {}
for part in open(request["queries"]).read().split("-- name: ")[1:]:
    name, body = part.split("\n", 1)
    queries[name.strip()] = body.strip()
os.chdir(os.path.dirname(os.path.abspath(out)))
con = duckdb.connect()
for statement in queries.pop("views").split(";\n"):
    if statement.strip():
        con.execute(statement)
answers = {}
for name, sql in queries.items():
    seconds = []
    for _ in range(request["runs"]):
        start = time.perf_counter()
        rows = con.execute(sql).fetchall()
        seconds.append(time.perf_counter() - start)
    answers[name] = {"seconds": seconds, "rows": len(rows)}
print(json.dumps({"traces": traces, "bytes": size, "queries": answers}))
