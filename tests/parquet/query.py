"""Runs SQL with DuckDB for tests/parquet.rs: reads a JSON request
{"cwd": DIR, "setup": [SQL...], "queries": {NAME: SQL}} from the file named
by argv[1], runs the setup statements, then each query, in DIR, and prints
{NAME: {"columns": [...], "rows": [[...], ...]}} as JSON. Values other than
numbers, strings, lists and null (timestamps) are printed as strings."""

import json
import os
import sys

import duckdb

request = json.load(open(sys.argv[1]))
os.chdir(request["cwd"])
con = duckdb.connect()
for statement in request["setup"]:
    con.execute(statement)
answers = {}
for name, sql in request["queries"].items():
    try:
        cursor = con.execute(sql)
        answers[name] = {
            "columns": [d[0] for d in cursor.description],
            "rows": [list(row) for row in cursor.fetchall()],
        }
    except Exception as error:  # name the query that failed
        sys.exit(f"query {name} failed: {error}\n{sql}")
print(json.dumps(answers, default=str))
