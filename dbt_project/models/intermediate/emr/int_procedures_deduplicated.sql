-- The latest version of each (procedure) received from each institution: one row per
-- (institution_code, procedure_id).
{{ latest_per_key(ref('stg_bronze__procedures'), ['institution_code', 'procedure_id']) }}
