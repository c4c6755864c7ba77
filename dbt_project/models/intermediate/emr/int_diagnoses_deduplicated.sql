-- The latest version of each (diagnosis) received from each institution: one row per
-- (institution_code, diagnosis_id).
{{ latest_per_key(ref('stg_bronze__diagnoses'), ['institution_code', 'diagnosis_id']) }}
