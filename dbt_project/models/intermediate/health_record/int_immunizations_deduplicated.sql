-- The latest version of each (immunization) received from each institution: one row per
-- (institution_code, immunization_id).
{{ latest_per_key(ref('stg_bronze__immunizations'), ['institution_code', 'immunization_id']) }}
