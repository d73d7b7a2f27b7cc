-- The fleet queries of docs/fleet.md for ClickHouse (`clickhouse local`,
-- or chdb), reading the files with file(). `cargo xtask test --engines`
-- runs them with chdb-core and compares their answers with DuckDB's; the
-- default test run checks only that docs/fleet.md shows each as written.

-- name: slowest_units
SELECT unit,
       uniqExact(host) AS hosts,
       count() AS boots,
       quantileExactInclusive(0.5)(activating_ns) AS median_activating_ns,
       quantileExactInclusive(0.95)(activating_ns) AS p95_activating_ns,
       quantileExactInclusive(0.5)(active_at_ns) AS median_active_at_ns,
       quantileExactInclusive(0.95)(active_at_ns) AS p95_active_at_ns
FROM file('fleet/*/*unit_activations.parquet', Parquet) AS activations
INNER JOIN file('fleet/*/*traces.parquet', Parquet) AS traces USING (trace_id)
WHERE activating_ns IS NOT NULL
GROUP BY unit
ORDER BY p95_activating_ns DESC, unit
LIMIT 20;

-- name: slower_boots
WITH ordered AS (
    SELECT host, boot_id, start_boottime_ns + duration_ns AS boot_ns,
           lagInFrame(boot_id) OVER w AS previous_boot_id,
           lagInFrame(start_boottime_ns + duration_ns) OVER w AS previous_ns
    FROM file('fleet/*/*traces.parquet', Parquet)
    WHERE traced = 'boot'
    WINDOW w AS (PARTITION BY host ORDER BY recorded_at
                 ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
)
SELECT host, boot_id, previous_boot_id, previous_ns, boot_ns,
       round(100 * (boot_ns - previous_ns) / previous_ns, 1) AS slower_pct
FROM ordered
WHERE previous_ns > 0 AND boot_ns > previous_ns * (1 + 20 / 100.0)
ORDER BY slower_pct DESC, host, boot_id;

-- name: runpath_culprits
SELECT package_name,
       uniqExact(package_store_path) AS builds,
       uniqExact(host) AS hosts,
       sum(count) AS failed_lookups,
       sum(ns) AS failed_lookup_ns
FROM file('fleet/*/*failed_lookups.parquet', Parquet) AS f
INNER JOIN file('fleet/*/*traces.parquet', Parquet) AS traces USING (trace_id)
WHERE package_name IS NOT NULL
GROUP BY package_name
ORDER BY failed_lookups DESC, package_name
LIMIT 20;
