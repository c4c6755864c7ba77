-- The latest version of each (practitioner) received from each institution: one row per
-- (institution_code, practitioner_id).
{{ latest_per_key(ref('stg_bronze__practitioners'), ['institution_code', 'practitioner_id']) }}
