-- The latest version of each (encounter) received from each institution: one row per
-- (institution_code, encounter_id).
{{ latest_per_key(ref('stg_bronze__encounters'), ['institution_code', 'encounter_id']) }}
