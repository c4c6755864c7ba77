-- The latest version of each (exam_report) received from each institution: one row per
-- (institution_code, report_id).
{{ latest_per_key(ref('stg_bronze__exam_reports'), ['institution_code', 'report_id']) }}
