{#- The quality gate (质控闸门) in staging: a bronze row reaches the marts only when its batch is promoted.

    Every staging model over bronze filters its source with this one predicate:

        select * from {{ source('bronze', 'person') }} where {{ quality_gate_filter() }}

    quality/gate.py appends one decision per batch and run to lake.quality.batch_gate (promoted | held,
    with the reason and, for an override, who released it); a batch's current decision is its latest
    row per data set, and a file of a multi-data-set feed (HL7, FHIR) is promoted only when every data
    set of it is. Only promoted batches are read: a held batch (合格率 below its
    threshold, or a critical rule that could not run) and a batch not decided yet are left out, and
    every other batch of every institution goes on. A held batch comes back on the next dbt run once
    it is released (a corrected re-delivery is a new batch; an override appends a 'promoted' row).

    Before the gate has ever run (no lake.quality.batch_gate, e.g. dbt on a bare bronze layer) there is
    nothing to filter on and every batch is read. `dbt ... --vars '{quality_gate: false}'` switches the
    filter off explicitly (a rebuild of the marts from all of bronze, for comparison).
-#}
{% macro quality_gate_filter(batch_column='_batch_id') %}
    {#- A unit test's fixture rows stand for promoted rows: no gate in unit tests. -#}
    {%- if model is defined and model.resource_type == 'unit_test' -%}
        true
    {%- elif execute and var('quality_gate', true) and quality_gate_table_exists() -%}
        {{ batch_column }} in (
            select batch_id from (
                select batch_id, dataset, arg_max(decision, decided_at) as decision
                from {{ target.database }}.quality.batch_gate
                group by batch_id, dataset
            )
            group by batch_id
            having bool_and(decision = 'promoted')
        )
    {%- else -%}
        true
    {%- endif -%}
{% endmacro %}


{#- Asked once per dbt invocation (every staging model and every batch lookup asks): the answer is
    kept in the invocation's graph dict. duckdb_tables() loads the statistics of every table of the
    lake (0.6-0.9 s of CPU after each commit on a 100k-resident lake); duckdb_schemas() does not, so
    a lake without a quality schema is answered by it alone. A run that selects a source has the
    answer already: on-run-start (check_sources_exist) reads every table's name before the first
    commit and sets the same key. -#}
{% macro quality_gate_table_exists() %}
    {%- set memo = '__healthlake_quality_gate_table_exists' -%}
    {%- if memo not in graph -%}
        {%- set found = run_query(
            "select count(*) from duckdb_schemas() where database_name = '" ~ target.database
            ~ "' and schema_name = 'quality'").columns[0].values()[0] > 0 -%}
        {%- if found -%}
            {%- set found = run_query(
                "select count(*) from duckdb_tables() where database_name = '" ~ target.database
                ~ "' and schema_name = 'quality' and table_name = 'batch_gate'").columns[0].values()[0] > 0 -%}
        {%- endif -%}
        {%- do graph.update({memo: found}) -%}
    {%- endif -%}
    {{- return(graph[memo]) -}}
{% endmacro %}
