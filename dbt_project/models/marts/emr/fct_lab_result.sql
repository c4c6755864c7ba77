{{ config(materialized='incremental', unique_key='lab_result_key', incremental_strategy='delete+insert',
          on_schema_change='append_new_columns') }}

{%- set range_flag -%}
    case
        when result_value_numeric > reference_high then 'H'
        when result_value_numeric < reference_low then 'L'
        when result_value_numeric between reference_low and reference_high then 'N'
    end
{%- endset -%}

-- 检验结果：one row per lab result (institution_code, lab_result_id): the value as reported and its
-- numeric reading, unit, reference range (and its bounds when it is 'low-high'), abnormal flag.
-- Incremental by a literal batch list (macros/incremental.sql, newer_than_held): a run reads only the
-- new lab result batches' rows (the latest version of each key among them replaces the row held when it
-- is later) and re-links the rows held whose person link changed (relinked_by_encounter: person_key
-- through the encounter (fct_encounter) first, then the institution's patient).
-- depends_on: {{ ref('stg_bronze__lab_results') }}

with

lab_results as (

    {%- if is_incremental() %}
    select * from ({{ newer_than_held(ref('stg_bronze__lab_results'), ['institution_code', 'lab_result_id']) }}) as new_versions
    {%- else %}
    select * from {{ ref('int_lab_results_deduplicated') }}
    {%- endif %}

),

encounters as (

    select institution_code, encounter_id, person_key from {{ ref('fct_encounter') }}

),

patients as (

    select * from {{ ref('int_patients_linked') }}

),

lab_items as (

    select * from {{ ref('wst102_lab_items') }}

),

joined as (

    select
        {{ hash_key(['lab_results.institution_code', 'lab_results.lab_result_id']) }} as lab_result_key,
        {{ hash_key(['lab_results.institution_code', 'lab_results.encounter_id']) }} as encounter_key,
        coalesce(encounters.person_key, patients.person_key) as person_key,
        lab_results.institution_code,
        lab_results.lab_result_id,
        lab_results.encounter_id,
        lab_results.patient_id,
        lab_results.item_code,
        lab_results.item_name,
        lab_items.name_zh as standard_item_name,
        lab_items.loinc_code,
        lab_items.item_code is not null as is_known_lab_item,
        lab_results.result_value,
        lab_results.result_value_numeric,
        lab_results.unit,
        lab_results.reference_range,
        -- '3.9-6.1', '3.9~6.1', '3.9—6.1' → 3.9 and 6.1; any other shape ('<5.2', '阴性') → null
        try_cast(regexp_extract(lab_results.reference_range, '^\s*(-?[0-9.]+)\s*[-~～—–]+\s*(-?[0-9.]+)\s*$', 1)
            as decimal(18, 4)) as reference_low,
        try_cast(regexp_extract(lab_results.reference_range, '^\s*(-?[0-9.]+)\s*[-~～—–]+\s*(-?[0-9.]+)\s*$', 2)
            as decimal(18, 4)) as reference_high,
        lab_results.abnormal_flag as sent_abnormal_flag,
        lab_results.reported_at,
        lab_results._batch_id,
        lab_results._ingested_at
    from lab_results
    left join encounters
        on encounters.institution_code = lab_results.institution_code
        and encounters.encounter_id = lab_results.encounter_id
    left join patients
        on patients.institution_code = lab_results.institution_code
        and patients.patient_id = lab_results.patient_id
    left join lab_items
        on lab_items.item_code = lab_results.item_code

),

final as (

    select
        * exclude (sent_abnormal_flag, reported_at, _batch_id, _ingested_at),
        -- the flag the laboratory sent; without one, the numeric result against the range
        coalesce(sent_abnormal_flag, {{ range_flag }}) as abnormal_flag,
        case
            when sent_abnormal_flag is not null then 'sent'
            when {{ range_flag }} is not null then 'derived'
        end as abnormal_flag_source,
        coalesce(coalesce(sent_abnormal_flag, {{ range_flag }}) in ('H', 'L', 'A'), false) as is_abnormal,
        reported_at,
        _batch_id,
        _ingested_at
    from joined

)

select * from final
{%- if is_incremental() %}

union all

{{ relinked_by_encounter(['institution_code', 'lab_result_id'], 'lab_results') }}
{%- endif %}
