{#- The latest version of each business key. Institutions re-send rows (corrections, full
    re-extracts); the version ingested last wins, then the later batch, then the later row of the
    file (var healthlake_latest_first). Rows without a complete business key cannot be told
    apart and are left out here (staging keeps them; the quality rules report them).
    version_count says how many versions of the key were received. -#}
{% macro latest_per_key(relation, key_columns) -%}
select
    *,
    count(*) over (partition by {{ key_columns | join(', ') }}) as version_count
from {{ relation }}
where {% for k in key_columns %}{{ k }} is not null{{ ' and ' if not loop.last }}{% endfor %}
qualify row_number() over (
    partition by {{ key_columns | join(', ') }}
    order by {{ var('healthlake_latest_first') }}
) = 1
{%- endmacro %}
