{#- The coded elements checked against their national code tables (int_code_values_checked) and the
    staging models they come from (int_code_values_by_batch reads those models' batches). -#}

{% macro code_value_checks() -%}
{{ return([
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
]) }}
{%- endmacro %}


{% macro icd10_code_value_checks() -%}
{{ return([
    {'model': 'stg_bronze__diagnoses', 'dataset': 'diagnosis', 'element': 'diagnosis_code'},
    {'model': 'stg_bronze__chronic_followups', 'dataset': 'chronic_followup', 'element': 'disease_code'},
    {'model': 'stg_bronze__vital_events', 'dataset': 'vital_event', 'element': 'death_cause_code'},
]) }}
{%- endmacro %}


{% macro code_value_models() -%}
{%- set models = [] %}
{%- for c in code_value_checks() + icd10_code_value_checks() %}
{%- if c.model not in models %}{% do models.append(c.model) %}{% endif %}
{%- endfor %}
{{ return(models) }}
{%- endmacro %}


{#- Every coded value of the staging models, checked: one row per (source row, coded element) with a
    value — institution_code, code_system, code_system_name, dataset, element, code_value, is_mapped,
    _ingested_at, _batch_id. Each staging model is read once and unpivoted into its coded elements
    (a staging view expanded once per element costs one lake scan and one evaluation of the view
    each: ~60 scans for the 18 checks); the values then join their code tables by (data set,
    element). batches: none reads every row; else a dict staging model → SQL literal list of
    batches ('b1', 'b2'), pushed into each model's bronze scan, and a model not in it is not read. -#}
{% macro code_values_checked(batches=none) -%}
{%- set checks = code_value_checks() -%}
{%- set icd10_checks = icd10_code_value_checks() -%}
{%- set models = [] -%}
{%- for m in code_value_models() if batches is none or m in batches %}{% do models.append(m) %}{% endfor -%}
with

{% for m in models %}
{%- set elements = [] %}
{%- for c in checks + icd10_checks if c.model == m and c.element not in elements %}{% do elements.append(c.element) %}{% endfor %}
rows_{{ loop.index }} as (

    select
        institution_code,
        {%- for e in elements %}
        cast({{ e }} as varchar) as {{ e }},
        {%- endfor %}
        _ingested_at,
        _batch_id
    from {{ ref(m) }}
    {%- if batches is not none %}
    where _batch_id in {{ batches[m] }}
    {%- endif %}

),

values_{{ loop.index }} as (

    -- nulls are left out (UNPIVOT's default): only values sent are checked
    select
        institution_code,
        '{{ (checks + icd10_checks) | selectattr("model", "equalto", m) | map(attribute="dataset") | first }}' as dataset,
        element,
        code_value,
        _ingested_at,
        _batch_id
    from (unpivot rows_{{ loop.index }} on {{ elements | join(', ') }} into name element value code_value)

),
{% endfor %}

code_values as (

    {%- for m in models %}
    select * from values_{{ loop.index }}
    {{- ' union all' if not loop.last }}
    {%- else %}
    select null::varchar as institution_code, null::varchar as dataset, null::varchar as element,
           null::varchar as code_value, null::timestamptz as _ingested_at, null::varchar as _batch_id
    where false
    {%- endfor %}

),

checks as (

    select * from (values
        {%- for c in checks %}
        ('{{ c.dataset }}', '{{ c.element }}', '{{ c.system }}', '{{ c.name }}', false),
        {%- endfor %}
        {%- for c in icd10_checks %}
        ('{{ c.dataset }}', '{{ c.element }}', 'ICD-10', '疾病分类与代码', true){{ ',' if not loop.last }}
        {%- endfor %}
    ) as checks (dataset, element, code_system, code_system_name, is_icd10)

),

code_tables as (

    select distinct dataset, element, code_value from (
        {%- for c in checks %}
        select '{{ c.dataset }}' as dataset, '{{ c.element }}' as element,
               cast({{ c.seed_col }} as varchar) as code_value
        from {{ ref(c.seed) }}
        {{- ' union all' if not loop.last }}
        {%- endfor %}
    )

)

select
    code_values.institution_code,
    checks.code_system,
    checks.code_system_name,
    code_values.dataset,
    code_values.element,
    code_values.code_value,
    case
        when checks.is_icd10 then {{ icd10_is_known('code_values.code_value') }}
        else code_tables.code_value is not null
    end as is_mapped,
    code_values._ingested_at,
    code_values._batch_id
from code_values
join checks
    on checks.dataset = code_values.dataset
    and checks.element = code_values.element
-- equality joins only (a condition on checks.is_icd10 here makes them nested-loop joins): no code
-- table row has an ICD-10 element, and each ICD-10 code is in its table once
left join code_tables
    on code_tables.dataset = code_values.dataset
    and code_tables.element = code_values.element
    and code_tables.code_value = code_values.code_value
left join {{ ref('icd10_categories') }} as icd10_category
    on icd10_category.category_code = substr(code_values.code_value, 1, 3)
left join {{ ref('icd10_subcategories') }} as icd10_subcategory
    on icd10_subcategory.subcategory_code = substr(code_values.code_value, 1, 5)
{%- endmacro %}
