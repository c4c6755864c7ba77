{{ config(materialized='incremental', unique_key='_batch_id', incremental_strategy='delete+insert',
          on_schema_change='append_new_columns') }}

-- Coded values counted per batch: one row per (batch, institution, code system, data set, element,
-- value, mapped or not, month received) with the number of rows that carried it. Rows are counted
-- as received (int_code_values_checked), so the counts of a batch never change once it is loaded:
-- an incremental run counts only the batches this table has not seen (a batch held by the quality
-- gate and released later is new then). resource.unmapped_code and indicator IND12 sum these
-- counts instead of reading every coded value of the lake again. A full refresh recounts all.
-- The SQL is int_code_values_checked's (macros/code_value_checks.sql), each staging model read
-- once, restricted to its new batches.

-- depends_on: {% for m in code_value_models() %}{{ ref(m) }} {% endfor %}

{%- set batches = none %}
{%- if is_incremental() and execute %}
{#- per staging model the batches it holds (staging_batch_list: its bronze table's batch column,
    read once per dbt invocation) not yet counted, as a literal list pushed into its bronze scan; a
    model without a new batch is not read at all -#}
{%- set staging_models = [] %}
{%- for m in code_value_models() %}{% do staging_models.append(ref(m)) %}{% endfor %}
{%- do prefetch_staging_batch_lists(staging_models) %}
{%- set found -%}
    select model, _batch_id from (values
    {%- for m in code_value_models() %}
        {%- for b in staging_batch_list(ref(m)) %}
        ('{{ m }}', '{{ b | replace("'", "''") }}'),
        {%- endfor %}
    {%- endfor %}
        (null, null)
    ) as batches (model, _batch_id)
    where _batch_id is not null
      and _batch_id not in (select distinct _batch_id from {{ this }})
    order by model, _batch_id
{%- endset %}
{%- set batches = {} %}
{%- for row in run_query(found).rows %}
{%- do batches.setdefault(row[0], []).append("'" ~ (row[1] | replace("'", "''")) ~ "'") %}
{%- endfor %}
{%- for m in batches %}{% do batches.update({m: '(' ~ (batches[m] | join(', ')) ~ ')'}) %}{% endfor %}
{%- endif %}

select
    _batch_id,
    institution_code,
    code_system,
    code_system_name,
    dataset,
    element,
    code_value,
    is_mapped,
    cast(date_trunc('month', _ingested_at) as date) as ingested_month,
    cast(count(*) as bigint) as row_count,
    min(_ingested_at) as first_received_at,
    max(_ingested_at) as last_received_at
{%- if batches is not none and not batches %}
-- no staging model has a batch not counted yet: nothing to read (not even the code tables)
from (select null::varchar as _batch_id, null::varchar as institution_code, null::varchar as code_system,
             null::varchar as code_system_name, null::varchar as dataset, null::varchar as element,
             null::varchar as code_value, null::boolean as is_mapped, null::timestamptz as _ingested_at
      where false) as code_values
{%- else %}
from ({{ code_values_checked(batches) }}) as code_values
{%- endif %}
group by all
