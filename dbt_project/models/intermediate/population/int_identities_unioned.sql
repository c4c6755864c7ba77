-- Every source identity the lake holds: one row per (institution_code, source_dataset, source_id).
-- A person is known to the platform through three data sets: the patient index of a hospital
-- (person), the resident health archive (health_record) and the immunisation register
-- (immunization: each vaccination record names its recipient). The EMPI links these rows to persons.
-- mother_id_number (a child's record names the mother) links newborns sent without an ID number.

with

persons as (

    select * from {{ ref('int_persons_deduplicated') }}

),

health_records as (

    select * from {{ ref('int_health_records_deduplicated') }}

),

immunizations as (

    select * from {{ ref('int_immunizations_deduplicated') }}

),

unioned as (

    select
        institution_code,
        'person' as source_dataset,
        patient_id as source_id,
        1 as dataset_priority,
        id_type_code,
        id_number,
        is_valid_id_number,
        mother_id_number,
        name,
        sex_code,
        birth_date,
        ethnicity_code,
        phone,
        address_division_code,
        address_text,
        updated_at as source_updated_at,
        _batch_id,
        _ingested_at
    from persons

    union all

    select
        institution_code,
        'health_record' as source_dataset,
        record_id as source_id,
        2 as dataset_priority,
        null as id_type_code,
        id_number,
        is_valid_id_number,
        mother_id_number,
        name,
        sex_code,
        birth_date,
        null as ethnicity_code,
        phone,
        address_division_code,
        address_text,
        cast(created_date as timestamp) as source_updated_at,
        _batch_id,
        _ingested_at
    from health_records

    union all

    select
        institution_code,
        'immunization' as source_dataset,
        immunization_id as source_id,
        3 as dataset_priority,
        null as id_type_code,
        id_number,
        is_valid_id_number,
        mother_id_number,
        name,
        null as sex_code,
        birth_date,
        null as ethnicity_code,
        null as phone,
        null as address_division_code,
        null as address_text,
        cast(vaccinated_date as timestamp) as source_updated_at,
        _batch_id,
        _ingested_at
    from immunizations

)

select
    {{ hash_key(['institution_code', 'source_dataset', 'source_id']) }} as identity_key,
    *
from unioned
