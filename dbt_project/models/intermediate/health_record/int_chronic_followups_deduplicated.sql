-- The latest version of each (chronic_followup) received from each institution: one row per
-- (institution_code, followup_id).
{{ latest_per_key(ref('stg_bronze__chronic_followups'), ['institution_code', 'followup_id']) }}
