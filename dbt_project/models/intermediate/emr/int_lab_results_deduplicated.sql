-- The latest version of each (lab_result) received from each institution: one row per
-- (institution_code, lab_result_id).
{{ latest_per_key(ref('stg_bronze__lab_results'), ['institution_code', 'lab_result_id']) }}
