"""Runs the fleet queries with ClickHouse (chdb) or Spark (pyspark), for
tests/parquet.rs when `cargo xtask test --engines` asks for them: reads a
JSON request {"cwd": DIR, "engine": "clickhouse" | "spark", "setup":
[SQL...], "queries": {NAME: SQL}} from the file named by argv[1], runs the
setup statements, then each query, in DIR, and prints {NAME: [[...], ...]}
(the rows) as JSON, numbers as numbers."""

import decimal
import json
import os
import sys

request = json.load(open(sys.argv[1]))
os.chdir(request["cwd"])


def plain(value):
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


answers = {}
if request["engine"] == "clickhouse":
    from chdb import session

    s = session.Session()
    for statement in request["setup"]:
        s.query(statement)
    for name, sql in request["queries"].items():
        sql = sql.strip().rstrip(";") + " SETTINGS output_format_json_quote_64bit_integers = 0"
        result = s.query(sql, "JSONCompact")
        answers[name] = [plain(row) for row in json.loads(result.bytes())["data"]]
elif request["engine"] == "spark":
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[2]")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    for statement in request["setup"]:
        spark.sql(statement)
    for name, sql in request["queries"].items():
        rows = spark.sql(sql.strip().rstrip(";")).collect()
        answers[name] = [plain(list(row)) for row in rows]
    spark.stop()
else:
    sys.exit(f"no engine {request['engine']!r}")
print(json.dumps(answers))
