{#- Large facts (encounters, lab results, medication orders) build incrementally by batch.

    A full build (first run, `--full-refresh`) reads the deduplicated intermediate model as before.
    An incremental run reads only the business keys that a batch not yet seen by the fact touched:

      new batches   the staging model's batches (already through the quality gate, so a held batch
                    released later counts as new) that no row of the fact comes from;
      touched keys  every business key with a row in a new batch;
      versions      every received version of those keys (old batches too): the latest wins, as in
                    latest_per_key, and version_count counts them all.

    dbt's delete+insert then replaces exactly those keys (unique_key). A batch whose every row was
    superseded later is read again on each run (it left no row in the fact): harmless, the result is
    the same. Rows of the fact whose person_key is no longer a person of dim_person (the EMPI merged
    two persons) or is null while the patient is now linked are rebuilt too (stale_person_keys);
    a full refresh re-derives everything, e.g. after a change of the linkage rules.
-#}

{#- The batches a staging model holds, as a query on one column. A staging model over bronze keeps
    every bronze row its quality-gate filter lets through (test_staging_keeps_every_bronze_row), so
    its batches are its bronze source's batches under that filter: read from the bronze table's
    _batch_id column they cost a column scan, where `select distinct _batch_id` from the view costs
    the view's joins on code columns over every row (0.9 s of CPU for stg_bronze__persons in a
    100k-resident city, 0.03 s from bronze). Any other relation is read as it is. Metadata only: the
    rows themselves are still read through staging. -#}
{% macro staging_batches(staging_relation) -%}
    {%- set node = graph.nodes.get('model.' ~ project_name ~ '.' ~ staging_relation.identifier) if execute else none -%}
    {%- set sources = node.sources if node else [] -%}
    {%- if sources | length == 1 and sources[0][0] == 'bronze' -%}
        {%- set src = graph.sources['source.' ~ project_name ~ '.' ~ sources[0][0] ~ '.' ~ sources[0][1]] -%}
        select distinct _batch_id from {{ api.Relation.create(database=src.database, schema=src.schema,
                                                              identifier=src.identifier or src.name) }}
        where {{ quality_gate_filter() }}
    {%- else -%}
        select distinct _batch_id from {{ staging_relation }}
    {%- endif -%}
{%- endmacro %}


{#- The batches of a staging model over bronze as a list, read once per dbt invocation (kept in
    the invocation's graph dict, as quality_gate_table_exists keeps its answer): dbt never writes
    bronze, and up to four models of a run ask for one staging model's batches (the code-value
    counts, the EMPI's identities, the marts built from it), each a cold scan of the bronze table.
    Any other relation is read each time. -#}
{% macro staging_batch_list(staging_relation) -%}
    {%- set node = graph.nodes.get('model.' ~ project_name ~ '.' ~ staging_relation.identifier) -%}
    {%- set over_bronze = node is not none and node.sources | length == 1 and node.sources[0][0] == 'bronze' -%}
    {%- set memo = '__healthlake_batches__' ~ staging_relation.identifier -%}
    {%- if over_bronze and memo in graph -%}
        {{- return(graph[memo]) -}}
    {%- endif -%}
    {%- set found = run_query("select _batch_id from (" ~ staging_batches(staging_relation)
                              ~ ") where _batch_id is not null order by _batch_id").columns[0].values() | list -%}
    {%- if over_bronze -%}
        {%- do graph.update({memo: found}) -%}
    {%- endif -%}
    {{- return(found) -}}
{%- endmacro %}


{#- staging_batch_list for several staging models over bronze in one query (a model that asks for
    many, int_code_values_by_batch, pays one round trip instead of one per model). -#}
{% macro prefetch_staging_batch_lists(staging_relations) -%}
    {%- set missing = [] -%}
    {%- for r in staging_relations -%}
        {%- set node = graph.nodes.get('model.' ~ project_name ~ '.' ~ r.identifier) -%}
        {%- if node is not none and node.sources | length == 1 and node.sources[0][0] == 'bronze'
              and ('__healthlake_batches__' ~ r.identifier) not in graph -%}
            {%- do missing.append(r) -%}
        {%- endif -%}
    {%- endfor -%}
    {%- if missing -%}
        {%- set sql -%}
            {%- for r in missing %}
            select '{{ r.identifier }}' as model, _batch_id from ({{ staging_batches(r) }})
            {{- ' union all' if not loop.last }}
            {%- endfor %}
        {%- endset -%}
        {%- set lists = {} -%}
        {%- for r in missing -%}{%- do lists.update({r.identifier: []}) -%}{%- endfor -%}
        {%- for row in run_query("select model, _batch_id from (" ~ sql ~ ") where _batch_id is not null order by model, _batch_id").rows -%}
            {%- do lists[row[0]].append(row[1]) -%}
        {%- endfor -%}
        {%- for m, batches in lists.items() -%}
            {%- do graph.update({'__healthlake_batches__' ~ m: batches}) -%}
        {%- endfor -%}
    {%- endif -%}
{%- endmacro %}


{#- Strings as SQL literals: ('a', 'b') — or (null) when there are none — or, with rows=true, the
    rows of a VALUES list: ('a'), ('b'). -#}
{% macro sql_literal_list(values, rows=false) -%}
    {%- set quoted = [] -%}
    {%- for b in values -%}
        {%- do quoted.append("'" ~ (b | replace("'", "''")) ~ "'") -%}
    {%- endfor -%}
    {%- if rows -%}
        {{- return("(" ~ (quoted | join("), (")) ~ ")") -}}
    {%- endif -%}
    {{- return("(" ~ (quoted | join(", ") if quoted else "null") ~ ")") -}}
{%- endmacro %}


{#- seen_relation: the table whose rows say which batches were built already (the fact itself, or
    for another data set the mart built from it in the previous run). -#}
{% macro new_batches(staging_relation, seen_relation=none) -%}
    {{ staging_batches(staging_relation) }}
    except
    select distinct _batch_id from {{ seen_relation or this }}
{%- endmacro %}


{#- The new batches as a literal list (new_batch_literals): pushed into the bronze scan, so only
    their rows are parsed to find the touched keys. -#}
{% macro touched_keys(staging_relation, key_columns, extra_keys_sql=none, seen_relation=none) -%}
    select distinct {{ key_columns | join(', ') }}
    from {{ staging_relation }}
    where _batch_id in {{ new_batch_literals(staging_relation, 'select distinct _batch_id from ' ~ (seen_relation or this)) }}
    {%- for k in key_columns %}
      and {{ k }} is not null
    {%- endfor %}
    {%- if extra_keys_sql %}
    union
    {{ extra_keys_sql }}
    {%- endif %}
{%- endmacro %}


{#- The keys of fact rows whose person link is stale: a person_key that dim_person no longer has,
    or no person_key while the institution's patient is linked now. -#}
{% macro stale_person_keys(key_columns) -%}
    select {{ key_columns | join(', ') }}
    from {{ this }} as fact
    where (fact.person_key is not null
           and fact.person_key not in (select person_key from {{ ref('dim_person') }}))
       or (fact.person_key is null
           and exists (select 1 from {{ ref('int_patients_linked') }} as patients
                       where patients.institution_code = fact.institution_code
                         and patients.patient_id = fact.patient_id
                         and patients.person_key is not null))
{%- endmacro %}


{#- latest_per_key restricted to the keys of keys_sql (every version of each of them). -#}
{% macro latest_per_key_of(relation, key_columns, keys_sql) -%}
select
    versions.*,
    count(*) over (partition by {% for k in key_columns %}versions.{{ k }}{{ ', ' if not loop.last }}{% endfor %}) as version_count
from {{ relation }} as versions
semi join ({{ keys_sql }}) as touched
    using ({{ key_columns | join(', ') }})
qualify row_number() over (
    partition by {% for k in key_columns %}versions.{{ k }}{{ ', ' if not loop.last }}{% endfor %}
    order by {{ var('healthlake_latest_first') }}
) = 1
{%- endmacro %}


{#- Incremental by a literal batch list: for models over staging views that are expensive to
    evaluate (every bronze row parsed), an incremental run must read the new batches' rows only.

    new_batch_literals: the batches of staging_relation that seen_sql does not list, as a SQL
    literal list ('b1', 'b2') — found when the model runs (staging_batch_list: the bronze table's
    batch column, read once per invocation, less those of seen_sql). A literal `_batch_id in (...)` is
    pushed into the bronze scan, so only those rows are parsed (a subquery or a semi join is not:
    the view's expressions would be evaluated on every row first).

    latest_of_batches: the latest version of each business key among the rows of those batches.
    A model then keeps such a row only when it is newer than the version it holds (newer_than: the
    order of var healthlake_latest_first, _ingested_at then _batch_id then _source_row) — the
    version it holds is the latest of every older batch, so the result equals latest_per_key over
    all batches. A batch none of whose rows won (all superseded) stays "new" and is read again on
    each run: harmless. A batch removed from staging (deleted from bronze, or held by the quality
    gate after it was promoted) is not noticed: a full refresh re-derives everything.
-#}
{% macro new_batch_literals(staging_relation, seen_sql) -%}
    {%- if not execute -%}
        {{ return("(null)") }}
    {%- endif -%}
    {%- set all_batches = staging_batch_list(staging_relation) -%}
    {%- if not all_batches -%}
        {{ return("(null)") }}
    {%- endif -%}
    {%- set found = run_query("select _batch_id from (values " ~ sql_literal_list(all_batches, rows=true)
                              ~ ") as batches (_batch_id) except " ~ seen_sql) -%}
    {{ return(sql_literal_list(found.columns[0].values() | sort)) }}
{%- endmacro %}


{% macro latest_of_batches(relation, key_columns, batch_literals) -%}
select *
from {{ relation }}
where _batch_id in {{ batch_literals }}
{%- for k in key_columns %}
  and {{ k }} is not null
{%- endfor %}
qualify row_number() over (
    partition by {{ key_columns | join(', ') }}
    order by {{ var('healthlake_latest_first') }}
) = 1
{%- endmacro %}


{#- new is a later version than held (held may be null: a key not held yet); with_source_row
    false when held has no _source_row (two rows of one batch are never compared then: a held
    batch is never new). -#}
{% macro newer_than(new, held, with_source_row=true) -%}
({{ held }}._batch_id is null
     or {{ new }}._ingested_at > {{ held }}._ingested_at
     or ({{ new }}._ingested_at = {{ held }}._ingested_at and {{ new }}._batch_id > {{ held }}._batch_id)
     {%- if with_source_row %}
     or ({{ new }}._ingested_at = {{ held }}._ingested_at and {{ new }}._batch_id = {{ held }}._batch_id
         and {{ new }}._source_row > {{ held }}._source_row)
     {%- endif %})
{%- endmacro %}


{#- Incremental against the version held (dim_health_record's way), for a mart with one row per
    business key and its source row's _batch_id and _ingested_at: the latest version of each key
    among the rows of the batches the mart has not seen (a literal batch list pushed into the bronze
    scan, new_batch_literals), kept when it is later than the row held (newer_than). Only the new
    batches' rows are parsed; every version of the touched keys is not read again. held_key_columns:
    the mart's names of key_columns when they differ. -#}
{% macro newer_than_held(staging_relation, key_columns, held_key_columns=none) -%}
{%- set held_keys = held_key_columns or key_columns -%}
{%- set batches = new_batch_literals(staging_relation, 'select _batch_id from ' ~ this) -%}
select new_versions.*
from ({{ latest_of_batches(staging_relation, key_columns, batches) }}) as new_versions
left join {{ this }} as held
    on {% for k in key_columns %}held.{{ held_keys[loop.index0] }} = new_versions.{{ k }}{{ ' and ' if not loop.last }}{% endfor %}
where {{ newer_than('new_versions', 'held', with_source_row=false) }}
{%- endmacro %}


{#- The rows held whose person link changed and that have no new version (new_relation: the new
    versions, with key_columns): the row as held with the person_key of person_key_sql, which may
    use the held row as `held` and the joins of joins_sql. A fact's person comes from its encounter
    (fct_encounter) or the institution's patient, or from its identity (the EMPI): when the EMPI
    merges, splits or newly links, the rows of those persons change without a new batch. The held
    mart is read in full (typed, a few columns joined): the staging views are not. -#}
{% macro relinked_held(key_columns, new_relation, person_key_sql, joins_sql) -%}
select held.* replace ({{ person_key_sql }} as person_key)
from {{ this }} as held
{{ joins_sql }}
where held.person_key is distinct from {{ person_key_sql }}
  and not exists (select 1 from {{ new_relation }} as new_versions
                  where {% for k in key_columns %}new_versions.{{ k }} = held.{{ k }}{{ ' and ' if not loop.last }}{% endfor %})
{%- endmacro %}


{#- relinked_held for the EMR facts linked through their encounter first, then the institution's
    patient (CTEs `encounters` and `patients` of the model). -#}
{% macro relinked_by_encounter(key_columns, new_relation) -%}
{{ relinked_held(key_columns, new_relation, 'coalesce(encounters.person_key, patients.person_key)',
    'left join encounters on encounters.institution_code = held.institution_code and encounters.encounter_id = held.encounter_id
left join patients on patients.institution_code = held.institution_code and patients.patient_id = held.patient_id') }}
{%- endmacro %}


{#- is_incremental() for a mart that links its rows again by a column it keeps (say id_number_key):
    false when the table held has no such column yet (built before it had one), so that run builds
    every row from the deduplicated model (delete+insert of every key, the column appended). The
    model passes its is_incremental() (a unit test overrides it there, not inside a macro). -#}
{% macro held_has_column(column, incremental) -%}
    {%- if not incremental or not execute -%}
        {{ return(incremental) }}
    {%- endif -%}
    {{ return(column in (adapter.get_columns_in_relation(this) | map(attribute='name') | list)) }}
{%- endmacro %}
