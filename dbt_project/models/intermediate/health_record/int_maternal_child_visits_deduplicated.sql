-- The latest version of each (maternal_child_visit) received from each institution: one row per
-- (institution_code, visit_id).
{{ latest_per_key(ref('stg_bronze__maternal_child_visits'), ['institution_code', 'visit_id']) }}
