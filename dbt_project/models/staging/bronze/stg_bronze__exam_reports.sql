with

source as (

    select * from {{ source('bronze', 'exam_report') }} where {{ quality_gate_filter() }}

),

trimmed as (

    select
        _institution_code as institution_code,
        {{ trim_columns(['report_id', 'encounter_id', 'patient_id', 'accession_number', 'exam_category',
                         'exam_item_name', 'body_part', 'findings', 'conclusion', 'is_abnormal', 'reported_at',
                         'reporting_practitioner_id']) }},
        {{ lineage_columns() }}
    from source

),

renamed as (

    select
        ----------  ids
        institution_code,
        report_id,
        encounter_id,
        patient_id,
        accession_number,
        reporting_practitioner_id,

        ----------  strings
        exam_category,
        exam_item_name,
        body_part,
        findings,
        conclusion,

        ----------  booleans
        case
            when upper(is_abnormal) in ('1', 'Y', 'YES', 'TRUE', '异常', '是', '阳性') then true
            when upper(is_abnormal) in ('0', 'N', 'NO', 'FALSE', '正常', '否', '未见异常', '阴性') then false
        end as is_abnormal,
        {{ is_conformant('reported_at', parse_timestamp('reported_at')) }} as is_valid_reported_at,

        ----------  timestamps
        {{ parse_timestamp('reported_at') }} as reported_at,

        ----------  lineage
        {{ lineage_columns() }}

    from trimmed

)

select * from renamed
