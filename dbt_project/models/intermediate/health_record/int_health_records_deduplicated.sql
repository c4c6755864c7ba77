-- The latest version of each (health_record) received from each institution: one row per
-- (institution_code, record_id).
{{ latest_per_key(ref('stg_bronze__health_records'), ['institution_code', 'record_id']) }}
