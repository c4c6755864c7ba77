{#- Use a model's custom schema as-is (population, emr, …) instead of dbt's default
    <target_schema>_<custom_schema>: the schema names are the four databases analysts query. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
