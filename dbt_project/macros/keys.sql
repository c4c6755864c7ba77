{#- Surrogate keys. A key is the md5 of its business-key columns joined with '|'; it is null when
    any part is null (the not_null tests then say so instead of colliding on a default). -#}
{% macro hash_key(columns) -%}
    md5({% for c in columns %}cast({{ c }} as varchar){{ " || '|' || " if not loop.last }}{% endfor %})
{%- endmacro %}

{#- Pseudonymous person_key = md5(secret || id_number), stable across runs and institutions for one
    valid ID number; only someone holding HEALTHLAKE_PERSON_KEY_SECRET can recompute it from an ID.
    The secret never appears in compiled SQL (target/, logs, Dagster): the model's pre-hook
    load_person_key_secret() puts it in a DuckDB variable through a bound parameter, and the SQL reads
    the variable. Use person_key() only in models with that pre-hook; it fails, rather than making
    unkeyed hashes, without it. -#}
{% macro person_key(id_number_col) -%}
    md5(coalesce(getvariable('healthlake_person_key_secret'),
                 error('person key secret not loaded: add pre_hook load_person_key_secret() to this model'))
        || {{ id_number_col }})
{%- endmacro %}

{% macro load_person_key_secret() -%}
    {%- if execute -%}
        {%- set secret = env_var('HEALTHLAKE_PERSON_KEY_SECRET') -%}
        {%- if secret | length < 8 -%}
            {{ exceptions.raise_compiler_error("HEALTHLAKE_PERSON_KEY_SECRET must be at least 8 characters") }}
        {%- endif -%}
        {%- do adapter.add_query("set variable healthlake_person_key_secret = ?", bindings=[secret], auto_begin=False) -%}
    {%- endif -%}
{%- endmacro %}
