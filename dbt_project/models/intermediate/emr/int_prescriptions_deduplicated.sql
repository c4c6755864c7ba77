-- The latest version of each (prescription) received from each institution: one row per
-- (institution_code, order_id).
{{ latest_per_key(ref('stg_bronze__prescriptions'), ['institution_code', 'order_id']) }}
