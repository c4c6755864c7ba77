-- The latest version of each (vital_event) received from each institution: one row per
-- (institution_code, event_id).
{{ latest_per_key(ref('stg_bronze__vital_events'), ['institution_code', 'event_id']) }}
