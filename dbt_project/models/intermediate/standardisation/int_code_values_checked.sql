-- Every coded value the institutions sent, checked against its national code table: one row per
-- (source row, coded element) with a value. Codes are read as staging standardised them
-- (codes.sql: '男' → '1', 'i10 ' → 'I10', '1' → '01'); a value that still matches no code of its
-- table is unmapped. Nothing is dropped here or in the marts: resource.unmapped_code lists the
-- unmapped values per institution and code system, the marts keep them with is_known_* false.
-- Rows are counted as received (every version an institution sent), so a re-sent row counts again.

{%- set checks = [
    {'system': 'GB/T 2261.1', 'name': '性别代码', 'model': 'stg_bronze__persons', 'dataset': 'person', 'element': 'sex_code', 'seed': 'gbt2261_1_sex', 'seed_col': 'code'},
    {'system': 'GB/T 2261.1', 'name': '性别代码', 'model': 'stg_bronze__health_records', 'dataset': 'health_record', 'element': 'sex_code', 'seed': 'gbt2261_1_sex', 'seed_col': 'code'},
    {'system': 'GB/T 2261.1', 'name': '性别代码', 'model': 'stg_bronze__practitioners', 'dataset': 'practitioner', 'element': 'sex_code', 'seed': 'gbt2261_1_sex', 'seed_col': 'code'},
    {'system': 'GB/T 2261.2', 'name': '婚姻状况代码', 'model': 'stg_bronze__persons', 'dataset': 'person', 'element': 'marital_status_code', 'seed': 'gbt2261_2_marital_status', 'seed_col': 'code'},
    {'system': 'GB 3304', 'name': '民族代码', 'model': 'stg_bronze__persons', 'dataset': 'person', 'element': 'ethnicity_code', 'seed': 'gb3304_ethnicity', 'seed_col': 'code'},
    {'system': 'GB/T 2260', 'name': '行政区划代码', 'model': 'stg_bronze__persons', 'dataset': 'person', 'element': 'address_division_code', 'seed': 'int_divisions_resolved', 'seed_col': 'division_code'},
    {'system': 'GB/T 2260', 'name': '行政区划代码', 'model': 'stg_bronze__health_records', 'dataset': 'health_record', 'element': 'address_division_code', 'seed': 'int_divisions_resolved', 'seed_col': 'division_code'},
    {'system': 'WS 445 患者类型', 'name': '就诊类型代码', 'model': 'stg_bronze__encounters', 'dataset': 'encounter', 'element': 'visit_type_code', 'seed': 'ws445_visit_type', 'seed_col': 'code'},
    {'system': 'WS 445 医疗付费方式', 'name': '医疗付费方式代码', 'model': 'stg_bronze__encounters', 'dataset': 'encounter', 'element': 'payment_method_code', 'seed': 'ws445_payment_method', 'seed_col': 'code'},
    {'system': 'WS/T 102', 'name': '检验项目代码', 'model': 'stg_bronze__lab_results', 'dataset': 'lab_result', 'element': 'item_code', 'seed': 'wst102_lab_items', 'seed_col': 'item_code'},
    {'system': 'WS 364 CV04.50.005', 'name': 'ABO 血型代码', 'model': 'stg_bronze__maternal_child_visits', 'dataset': 'maternal_child_visit', 'element': 'abo_blood_type_code', 'seed': 'ws364_abo_blood_type', 'seed_col': 'code'},
    {'system': 'WS 445 Rh 血型', 'name': 'Rh 血型代码', 'model': 'stg_bronze__maternal_child_visits', 'dataset': 'maternal_child_visit', 'element': 'rh_blood_type_code', 'seed': 'ws445_rh_blood_type', 'seed_col': 'code'},
    {'system': 'GB/T 2261.1', 'name': '性别代码', 'model': 'stg_bronze__vital_events', 'dataset': 'vital_event', 'element': 'sex_code', 'seed': 'gbt2261_1_sex', 'seed_col': 'code'},
    {'system': 'GB/T 2260', 'name': '行政区划代码', 'model': 'stg_bronze__vital_events', 'dataset': 'vital_event', 'element': 'place_division_code', 'seed': 'int_divisions_resolved', 'seed_col': 'division_code'},
    {'system': 'ICD-9-CM-3', 'name': '手术操作分类与代码', 'model': 'stg_bronze__procedures', 'dataset': 'procedure', 'element': 'procedure_code', 'seed': 'icd9cm3_procedures', 'seed_col': 'procedure_code'},
] -%}
{%- set icd10_checks = [
    {'model': 'stg_bronze__diagnoses', 'dataset': 'diagnosis', 'element': 'diagnosis_code'},
    {'model': 'stg_bronze__chronic_followups', 'dataset': 'chronic_followup', 'element': 'disease_code'},
    {'model': 'stg_bronze__vital_events', 'dataset': 'vital_event', 'element': 'death_cause_code'},
] %}

with

{% for c in checks %}
checked_{{ loop.index }} as (

    select
        source_rows.institution_code,
        '{{ c.system }}' as code_system,
        '{{ c.name }}' as code_system_name,
        '{{ c.dataset }}' as dataset,
        '{{ c.element }}' as element,
        source_rows.{{ c.element }} as code_value,
        code_table.{{ c.seed_col }} is not null as is_mapped,
        source_rows._ingested_at,
        source_rows._batch_id
    from {{ ref(c.model) }} as source_rows
    left join (select distinct {{ c.seed_col }} from {{ ref(c.seed) }}) as code_table
        on code_table.{{ c.seed_col }} = source_rows.{{ c.element }}
    where source_rows.{{ c.element }} is not null

),
{% endfor %}

{% for c in icd10_checks %}
icd10_{{ loop.index }} as (

    select
        source_rows.institution_code,
        'ICD-10' as code_system,
        '疾病分类与代码' as code_system_name,
        '{{ c.dataset }}' as dataset,
        '{{ c.element }}' as element,
        source_rows.{{ c.element }} as code_value,
        {{ icd10_is_known('source_rows.' ~ c.element) }} as is_mapped,
        source_rows._ingested_at,
        source_rows._batch_id
    from {{ ref(c.model) }} as source_rows
    left join {{ ref('icd10_categories') }} as icd10_category
        on icd10_category.category_code = substr(source_rows.{{ c.element }}, 1, 3)
    left join {{ ref('icd10_subcategories') }} as icd10_subcategory
        on icd10_subcategory.subcategory_code = substr(source_rows.{{ c.element }}, 1, 5)
    where source_rows.{{ c.element }} is not null

),
{% endfor %}

unioned as (

    {% for c in checks %}
    select * from checked_{{ loop.index }}
    union all
    {% endfor %}
    {% for c in icd10_checks %}
    select * from icd10_{{ loop.index }}{{ ' union all' if not loop.last }}
    {% endfor %}

)

select * from unioned
