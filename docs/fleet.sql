-- The fleet queries of docs/fleet.md, for DuckDB. tests/parquet.rs runs
-- every one of them against the tables its recordings make, and checks
-- that docs/fleet.md shows each exactly as written here. Each starts with
-- a `-- name:` line; `views` is run first, from the directory that holds
-- `fleet/`.

-- name: views
CREATE VIEW traces AS SELECT * FROM read_parquet('fleet/*/*traces.parquet');
CREATE VIEW processes AS SELECT * FROM read_parquet('fleet/*/*processes.parquet');
CREATE VIEW failed_lookups AS SELECT * FROM read_parquet('fleet/*/*failed_lookups.parquet');
CREATE VIEW unit_activations AS SELECT * FROM read_parquet('fleet/*/*unit_activations.parquet');
CREATE VIEW boots AS
SELECT trace_id, host, boot_id, recorded_at,
       start_boottime_ns + duration_ns AS boot_ns
FROM traces
WHERE traced = 'boot';

-- name: slowest_units
SELECT unit,
       count(DISTINCT host) AS hosts,
       count(*) AS boots,
       median(activating_ns) AS median_activating_ns,
       quantile_cont(activating_ns, 0.95) AS p95_activating_ns,
       median(active_at_ns) AS median_active_at_ns,
       quantile_cont(active_at_ns, 0.95) AS p95_active_at_ns
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
