-- The latest version of each DICOM instance received from each institution: one row per
-- (institution_code, sop_instance_uid).
{{ latest_per_key(ref('stg_bronze__imaging_instances'), ['institution_code', 'sop_instance_uid']) }}
