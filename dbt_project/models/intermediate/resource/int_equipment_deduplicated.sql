-- The latest version of each (equipment) received from each institution: one row per
-- (institution_code, equipment_id).
{{ latest_per_key(ref('stg_bronze__equipment'), ['institution_code', 'equipment_id']) }}
