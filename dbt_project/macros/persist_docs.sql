{#- Docs are persisted only where they differ from the comments already on the relation.

    dbt's persist_docs writes every comment (the table's and each column's) after every build. On
    an incremental mart the comments are already there: in DuckLake each `comment on` is a schema
    change, so a daily run re-wrote ~20 unchanged comments per incremental mart — the catalog kept
    a new row per comment and run (the old one ended), the model's commit cost 0.15-0.3 s instead of
    a few ms, and the next query of the run re-read the changed catalog (another 0.15-0.2 s).

    For an incremental model on an incremental run the comments are compared with those the
    relations held at the start of the dbt invocation (one read of the lake's table and column
    comments, kept in the invocation's graph dict: duckdb_tables()/duckdb_columns() load the whole
    catalog, 0.5-1 s, so they are read once, not per model); only the ones that differ (a changed
    description, a column appended) are written. Nothing else in a run comments an incremental
    model's relation, and a relation that did not exist when they were read has none in the map,
    so everything is written on a first run. Tables (rebuilt every run), `--full-refresh` and
    everything else get dbt's behaviour: every comment written.
-#}

{% macro duckdb__persist_docs(relation, model, for_relation, for_columns) -%}
  {%- set held = none -%}
  {%- if execute and model.config.materialized == 'incremental' and not should_full_refresh() -%}
    {%- set held = persisted_comments(relation) -%}
  {%- endif -%}

  {%- if for_relation and config.persist_relation_docs() and model.description
        and (held is none or held.get('') != model.description) -%}
    {%- do run_query(alter_relation_comment(relation, model.description)) -%}
  {%- endif -%}

  {%- if for_columns and config.persist_column_docs() and model.columns -%}
    {%- set changed = {} -%}
    {%- for name, column in model.columns.items() -%}
      {%- if held is none or held.get(name) != column.description -%}
        {%- do changed.update({name: column}) -%}
      {%- endif -%}
    {%- endfor -%}
    {%- if changed -%}
      {%- set existing_columns = adapter.get_columns_in_relation(relation) | map(attribute="name") | list -%}
      {%- set filtered_columns = validate_doc_columns(relation, changed, existing_columns) -%}
      {%- set alter_comment_sql = alter_column_comment(relation, filtered_columns) -%}
      {%- if alter_comment_sql and alter_comment_sql | trim | length > 0 -%}
        {%- do run_query(alter_comment_sql) -%}
      {%- endif -%}
    {%- endif -%}
  {%- endif -%}
{%- endmacro %}


{#- The comments relation held when the invocation first asked (table comment under '', each
    column's under its name), or an empty map for a relation that did not exist then. -#}
{% macro persisted_comments(relation) -%}
  {%- set memo = '__healthlake_comments__' ~ relation.database -%}
  {%- if memo not in graph -%}
    {%- set found = {} -%}
    {%- set rows = run_query("select schema_name, table_name, '' as column_name, comment from duckdb_tables() "
                             ~ "where database_name = '" ~ relation.database ~ "' "
                             ~ "union all select schema_name, table_name, column_name, comment from duckdb_columns() "
                             ~ "where database_name = '" ~ relation.database ~ "'").rows -%}
    {%- for row in rows -%}
      {%- set key = row[0] ~ '.' ~ row[1] -%}
      {%- if key not in found -%}
        {%- do found.update({key: {}}) -%}
      {%- endif -%}
      {%- do found[key].update({row[2]: row[3]}) -%}
    {%- endfor -%}
    {%- do graph.update({memo: found}) -%}
  {%- endif -%}
  {{- return(graph[memo].get(relation.schema ~ '.' ~ relation.identifier, {})) -}}
{%- endmacro %}
