{{ config(materialized='incremental', unique_key='identity_key', incremental_strategy='delete+insert',
          on_schema_change='sync_all_columns') }}

-- Every source identity the lake holds: one row per (institution_code, source_dataset, source_id).
-- A person is known to the platform through three data sets: the patient index of a hospital
-- (person), the resident health archive (health_record) and the immunisation register
-- (immunization: each vaccination record names its recipient). The EMPI links these rows to persons.
-- mother_id_number (a child's record names the mother) links newborns sent without an ID number.
-- A table, incremental by a literal batch list (macros/incremental.sql): the EMPI reads every
-- identity on every run, and evaluating the three staging views over all of bronze was most of
-- int_identities_linked's time; a run parses only the new batches' rows and replaces an identity
-- when the new version is later than the one held (the latest per key, as the deduplicated
-- views). A full refresh reads the deduplicated views.
-- depends_on: {{ ref('stg_bronze__persons') }} {{ ref('stg_bronze__health_records') }} {{ ref('stg_bronze__immunizations') }}

{%- set identity_rows = {} %}
{%- for dataset, staging, deduplicated, id_column in [
        ('person', 'stg_bronze__persons', 'int_persons_deduplicated', 'patient_id'),
        ('health_record', 'stg_bronze__health_records', 'int_health_records_deduplicated', 'record_id'),
        ('immunization', 'stg_bronze__immunizations', 'int_immunizations_deduplicated', 'immunization_id')] %}
{%- if is_incremental() %}
{%- set batches = new_batch_literals(ref(staging), "select _batch_id from " ~ this
                                                   ~ " where source_dataset = '" ~ dataset ~ "'") %}
{%- do identity_rows.update({dataset: latest_of_batches(ref(staging), ['institution_code', id_column], batches)}) %}
{%- else %}
{%- do identity_rows.update({dataset: 'select * from ' ~ ref(deduplicated)}) %}
{%- endif %}
{%- endfor %}

with

persons as (

    {{ identity_rows['person'] }}

),

health_records as (

    {{ identity_rows['health_record'] }}

),

immunizations as (

    {{ identity_rows['immunization'] }}

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
        _ingested_at,
        _source_row
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
        _ingested_at,
        _source_row
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
        _ingested_at,
        _source_row
    from immunizations

),

keyed as (

    select
        {{ hash_key(['institution_code', 'source_dataset', 'source_id']) }} as identity_key,
        *
    from unioned

)

select keyed.*
from keyed
{%- if is_incremental() %}
left join {{ this }} as held
    on held.identity_key = keyed.identity_key
where {{ newer_than('keyed', 'held') }}
{%- endif %}
