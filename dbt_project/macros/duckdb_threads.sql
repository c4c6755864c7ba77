{#- on-run-start: DuckDB's thread count for the run, HEALTHLAKE_DBT_DUCKDB_THREADS (exported by
    healthlake.dbt.dbt_env: HEALTHLAKE_DUCKDB_THREADS like the lake's other instances, the demo's 1,
    else one per core). `threads` is a setting of the whole DuckDB instance, so every node's cursor
    has it. It is set here and not in the profile's config_options: the profile's connection
    settings are part of dbt's partial-parse key, and a thread count that differed between
    `healthlake dbt-parse` and the run (the demo sets 1) made dbt parse the whole project again at
    the start of the run (~4.5 s of the demo's dbt step). -#}
{% macro apply_duckdb_threads() %}
    {%- if execute -%}
        {%- set threads = env_var('HEALTHLAKE_DBT_DUCKDB_THREADS', '') -%}
        {%- if threads -%}
            {%- do run_query("set threads = " ~ (threads | int)) -%}
        {%- endif -%}
    {%- endif -%}
{% endmacro %}
