-- The latest version of each (elderly_health_check) received from each institution: one row per
-- (institution_code, check_id).
{{ latest_per_key(ref('stg_bronze__elderly_health_checks'), ['institution_code', 'check_id']) }}
