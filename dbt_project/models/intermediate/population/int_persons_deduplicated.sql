-- The latest version of each (person) received from each institution: one row per
-- (institution_code, patient_id).
{{ latest_per_key(ref('stg_bronze__persons'), ['institution_code', 'patient_id']) }}
