-- The fleet queries of docs/fleet.md for Spark SQL (`spark-sql`, or
-- spark.sql(...) in pyspark, one statement at a time). `cargo xtask test
-- --engines` runs them with pyspark and compares their answers with
-- DuckDB's; the default test run checks only that docs/fleet.md shows each
-- as written.

-- name: views
CREATE OR REPLACE TEMP VIEW traces USING parquet OPTIONS (path 'fleet/*/*traces.parquet');
CREATE OR REPLACE TEMP VIEW processes USING parquet OPTIONS (path 'fleet/*/*processes.parquet');
CREATE OR REPLACE TEMP VIEW failed_lookups USING parquet OPTIONS (path 'fleet/*/*failed_lookups.parquet');
CREATE OR REPLACE TEMP VIEW unit_activations USING parquet OPTIONS (path 'fleet/*/*unit_activations.parquet');
CREATE OR REPLACE TEMP VIEW boots AS
SELECT trace_id, host, boot_id, recorded_at,
       start_boottime_ns + duration_ns AS boot_ns
FROM traces
WHERE traced = 'boot';

-- name: slowest_units
SELECT unit,
       count(DISTINCT host) AS hosts,
       count(*) AS boots,
       percentile(activating_ns, 0.5) AS median_activating_ns,
       percentile(activating_ns, 0.95) AS p95_activating_ns,
       percentile(active_at_ns, 0.5) AS median_active_at_ns,
       percentile(active_at_ns, 0.95) AS p95_active_at_ns
FROM unit_activations JOIN traces USING (trace_id)
WHERE activating_ns IS NOT NULL
GROUP BY unit
ORDER BY p95_activating_ns DESC, unit
LIMIT 20;

-- name: slower_boots
WITH ordered AS (
    SELECT host, boot_id, recorded_at, boot_ns,
           lag(boot_id) OVER (PARTITION BY host ORDER BY recorded_at) AS previous_boot_id,
           lag(boot_ns) OVER (PARTITION BY host ORDER BY recorded_at) AS previous_ns
    FROM boots
)
SELECT host, boot_id, previous_boot_id, previous_ns, boot_ns,
       round(100.0 * (boot_ns - previous_ns) / previous_ns, 1) AS slower_pct
FROM ordered
WHERE previous_ns > 0 AND boot_ns > previous_ns * (1 + 20 / 100.0)
ORDER BY slower_pct DESC, host, boot_id;

-- name: runpath_culprits
SELECT package_name,
       count(DISTINCT package_store_path) AS builds,
       count(DISTINCT host) AS hosts,
       sum(count) AS failed_lookups,
       sum(ns) AS failed_lookup_ns
FROM failed_lookups JOIN traces USING (trace_id)
WHERE package_name IS NOT NULL
GROUP BY package_name
ORDER BY failed_lookups DESC, package_name
LIMIT 20;
