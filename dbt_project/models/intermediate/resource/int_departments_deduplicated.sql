-- The latest version of each (department) received from each institution: one row per
-- (institution_code, department_code).
{{ latest_per_key(ref('stg_bronze__departments'), ['institution_code', 'department_code']) }}
