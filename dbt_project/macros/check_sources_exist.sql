{#- on-run-start: fail early, and say what to do, when a source table the selected nodes read is not
    in the lake. The ingest creates every bronze table (and the ops tables) before it loads
    anything; dbt never creates them, so the ingest stays the one owner of their schema.
    It also reads the comments the lake's relations hold (persisted_comments, macros/persist_docs.sql)
    when incremental models are selected: here the catalog is loaded already (dbt's relation cache),
    later in the run every schema change makes the first catalog-wide query load it again. For the
    same reason the quality gate's table (quality_gate_table_exists) is looked up in the list of
    tables read here. -#}
{% macro check_sources_exist() %}
    {%- if execute and flags.WHICH in ('build', 'run', 'test') -%}
        {%- set needed = [] -%}
        {%- for uid in selected_resources -%}
            {%- set node = graph.nodes.get(uid) -%}
            {%- if node is not none -%}
                {%- for dep in node.depends_on.nodes if dep.startswith('source.') and dep not in needed -%}
                    {%- do needed.append(dep) -%}
                {%- endfor -%}
            {%- endif -%}
        {%- endfor -%}
        {%- if needed -%}
            {%- set existing = run_query(
                "select lower(schema_name || '.' || table_name) from duckdb_tables() where database_name = '"
                ~ target.database ~ "'").columns[0].values() -%}
            {#- The quality gate's table is looked up from this list too (quality_gate_table_exists):
                later in the run, after a commit, duckdb_tables() loads the catalog again (0.7-1.2 s). -#}
            {%- do graph.update({'__healthlake_quality_gate_table_exists': 'quality.batch_gate' in existing}) -%}
            {%- set missing = [] -%}
            {%- for uid in needed -%}
                {%- set src = graph.sources[uid] -%}
                {%- if (src.schema ~ '.' ~ src.identifier) | lower not in existing -%}
                    {%- do missing.append(src.schema ~ '.' ~ src.identifier) -%}
                {%- endif -%}
            {%- endfor -%}
            {%- if missing -%}
                {{ exceptions.raise_compiler_error(
                    "The lake has no " ~ (missing | sort | join(', ')) ~ ". The ingest creates the bronze and ops "
                    ~ "tables: run it first (healthlake ingest / the Dagster ingest assets), then dbt.") }}
            {%- endif -%}
        {%- endif -%}
        {%- set incremental = [] -%}
        {%- for uid in selected_resources if flags.WHICH in ('build', 'run') -%}
            {%- set node = graph.nodes.get(uid) -%}
            {%- if node is not none and node.config.materialized == 'incremental' -%}
                {%- do incremental.append(uid) -%}
            {%- endif -%}
        {%- endfor -%}
        {%- if incremental -%}
            {%- do persisted_comments(api.Relation.create(database=target.database, schema='', identifier='')) -%}
        {%- endif -%}
    {%- endif -%}
{% endmacro %}
