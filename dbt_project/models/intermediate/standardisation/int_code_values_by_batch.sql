{{ config(materialized='incremental', unique_key='_batch_id', incremental_strategy='delete+insert',
          on_schema_change='append_new_columns') }}

-- Coded values counted per batch: one row per (batch, institution, code system, data set, element,
-- value, mapped or not, month received) with the number of rows that carried it. Rows are counted
-- as received (int_code_values_checked), so the counts of a batch never change once it is loaded:
-- an incremental run counts only the batches this table has not seen (a batch held by the quality
-- gate and released later is new then). resource.unmapped_code and indicator IND12 sum these
-- counts instead of reading every coded value of the lake again. A full refresh recounts all.

-- depends_on: {% for m in code_value_models() %}{{ ref(m) }} {% endfor %}

{%- set batch_filter = none %}
{%- if is_incremental() and execute %}
{#- the batches of the staging models the coded values come from (one column each: cheap), not
    yet counted -#}
{%- set seen -%}
    {%- for m in code_value_models() %}
    {{ staging_batches(ref(m)) }}
    union
    {%- endfor %}
    select null where false
    except
    select distinct _batch_id from {{ this }}
{%- endset %}
{%- set new_batches = run_query(seen).columns[0].values() %}
{#- a literal list: DuckDB pushes it through the view's union into each staging scan -#}
{%- set batch_filter -%}
    ({%- for b in new_batches %}'{{ b | replace("'", "''") }}'{{ ', ' if not loop.last }}{%- else %}null{%- endfor %})
{%- endset %}
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
from {{ ref('int_code_values_checked') }}
{%- if batch_filter is not none %}
where _batch_id in {{ batch_filter }}
{%- endif %}
group by all
