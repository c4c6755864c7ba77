-- Every coded value the institutions sent, checked against its national code table: one row per
-- (source row, coded element) with a value. Codes are read as staging standardised them
-- (codes.sql: '男' → '1', 'i10 ' → 'I10', '1' → '01'); a value that still matches no code of its
-- table is unmapped. Nothing is dropped here or in the marts: resource.unmapped_code lists the
-- unmapped values per institution and code system, the marts keep them with is_known_* false.
-- Rows are counted as received (every version an institution sent), so a re-sent row counts again.

{%- set checks = code_value_checks() -%}
{%- set icd10_checks = icd10_code_value_checks() %}

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
