with

source as (

    select * from {{ source('bronze', 'imaging_instance') }} where {{ quality_gate_filter() }}

),

trimmed as (

    select
        _institution_code as institution_code,
        {{ trim_columns(['sop_instance_uid', 'sop_class_uid', 'study_instance_uid', 'series_instance_uid',
                         'accession_number', 'patient_id', 'patient_sex', 'patient_birth_date', 'modality',
                         'body_part_examined', 'study_date', 'study_time', 'study_description', 'series_number',
                         'instance_number', 'institution_name', 'manufacturer', 'manufacturer_model_name',
                         'file_bytes', 'archive_uri']) }},
        {{ lineage_columns() }}
    from source

),

renamed as (

    select
        ----------  ids
        institution_code,
        sop_instance_uid,
        sop_class_uid,
        study_instance_uid,
        series_instance_uid,
        accession_number,
        patient_id,

        ----------  strings
        -- DICOM patient sex M/F/O → GB/T 2261.1 (O: 9 未说明的性别)
        case upper(patient_sex) when 'M' then '1' when 'F' then '2' when 'O' then '9' else {{ standardise_sex('patient_sex') }} end
            as sex_code,
        upper(modality) as modality,
        upper(body_part_examined) as body_part_examined,
        study_description,
        institution_name,
        manufacturer,
        manufacturer_model_name,
        archive_uri,

        ----------  numerics
        {{ parse_integer('series_number') }} as series_number,
        {{ parse_integer('instance_number') }} as instance_number,
        try_cast(file_bytes as bigint) as file_bytes,

        ----------  booleans
        {{ is_conformant('study_date', parse_date('study_date')) }} as is_valid_study_date,

        ----------  dates
        {{ parse_date('patient_birth_date') }} as patient_birth_date,
        {{ parse_date('study_date') }} as study_date,

        ----------  timestamps
        -- DICOM DA YYYYMMDD and TM HHMMSS[.frac]: the study's start (the date alone when TM is absent)
        {{ parse_timestamp('study_date') }} + coalesce(
            to_hours(try_cast(substr(study_time, 1, 2) as bigint))
            + to_minutes(try_cast(substr(study_time, 3, 2) as bigint))
            + to_seconds(try_cast(substr(study_time, 5, 2) as bigint)),
            to_hours(try_cast(substr(study_time, 1, 2) as bigint)),
            interval 0 second) as study_at,

        ----------  lineage
        {{ lineage_columns() }}

    from trimmed

)

select * from renamed
