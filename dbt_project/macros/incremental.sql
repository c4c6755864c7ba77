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

{#- seen_relation: the table whose rows say which batches were built already (the fact itself, or
    for another data set the mart built from it in the previous run). -#}
{% macro new_batches(staging_relation, seen_relation=none) -%}
    select distinct _batch_id from {{ staging_relation }}
    except
    select distinct _batch_id from {{ seen_relation or this }}
{%- endmacro %}


{% macro touched_keys(staging_relation, key_columns, extra_keys_sql=none, seen_relation=none) -%}
    select distinct {{ key_columns | join(', ') }}
    from {{ staging_relation }}
    where _batch_id in ({{ new_batches(staging_relation, seen_relation) }})
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
