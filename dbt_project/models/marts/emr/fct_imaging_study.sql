-- 影像检查：one row per imaging study (institution_code, study_instance_uid) built from the DICOM
-- header index (bronze.imaging_instance, one row per file): modalities, body parts, series and
-- instance counts, bytes archived, and the person (by the institution's patient id). The exam
-- report of the same accession number is linked when the institution sent one.

with

instances as (

    select * from {{ ref('int_imaging_instances_deduplicated') }}

),

studies as (

    select
        institution_code,
        study_instance_uid,
        min(accession_number) as accession_number,
        min(patient_id) as patient_id,
        min(sex_code) as sex_code,
        min(patient_birth_date) as patient_birth_date,
        string_agg(distinct modality, '/' order by modality) as modalities,
        string_agg(distinct body_part_examined, '/' order by body_part_examined) as body_parts,
        min(study_description) as study_description,
        min(study_date) as study_date,
        min(study_at) as study_at,
        count(distinct series_instance_uid) as series_count,
        count(*) as instance_count,
        sum(file_bytes) as total_bytes,
        min(institution_name) as performing_institution_name,
        min(manufacturer) as manufacturer,
        max(_batch_id) as _batch_id,
        max(_ingested_at) as _ingested_at
    from instances
    where study_instance_uid is not null
    group by institution_code, study_instance_uid

),

patients as (

    select * from {{ ref('int_patients_linked') }}

),

reports as (

    select institution_code, accession_number, min(exam_report_key) as exam_report_key
    from {{ ref('fct_exam_report') }}
    where accession_number is not null
    group by all

),

final as (

    select
        {{ hash_key(['studies.institution_code', 'studies.study_instance_uid']) }} as imaging_study_key,
        patients.person_key,
        studies.institution_code,
        studies.study_instance_uid,
        studies.accession_number,
        studies.patient_id,
        studies.sex_code,
        studies.patient_birth_date,
        studies.modalities,
        studies.body_parts,
        studies.study_description,
        studies.study_date,
        studies.study_at,
        cast(studies.series_count as integer) as series_count,
        cast(studies.instance_count as integer) as instance_count,
        cast(studies.total_bytes as bigint) as total_bytes,
        studies.performing_institution_name,
        studies.manufacturer,
        reports.exam_report_key,
        studies._batch_id,
        studies._ingested_at
    from studies
    left join patients
        on patients.institution_code = studies.institution_code
        and patients.patient_id = studies.patient_id
    left join reports
        on reports.institution_code = studies.institution_code
        and reports.accession_number = studies.accession_number

)

select * from final
