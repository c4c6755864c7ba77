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
