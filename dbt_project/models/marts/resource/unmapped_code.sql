-- 未对照编码清单：every coded value an institution sent that matches no code of its national code
-- table, one row per (institution, code system, data set, element, value), with how many rows
-- carried it and when it was first and last received. The rows themselves are kept in the marts
-- (flagged is_known_* false); this is the list the institution and the platform's code-mapping
-- staff work through (补充对照 or 整改).

with

checked as (

    -- counted per batch (int_code_values_by_batch, incremental): summed here
    select * from {{ ref('int_code_values_by_batch') }}
    where not is_mapped

),

final as (

    select
        {{ hash_key(['institution_code', 'code_system', 'dataset', 'element', 'code_value']) }} as unmapped_code_key,
        institution_code,
        code_system,
        code_system_name,
        dataset,
        element,
        code_value,
        cast(sum(row_count) as bigint) as row_count,
        min(first_received_at) as first_received_at,
        max(last_received_at) as last_received_at
    from checked
    group by all

)

select * from final
