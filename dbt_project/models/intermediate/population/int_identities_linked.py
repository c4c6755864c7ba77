"""Every source identity with the person it belongs to: one row per identity_key.

The master patient index (package ``empi``): identities standardised, linked deterministically on
an agreeing valid ID number (or passport + birth date + sex), then probabilistically (Splink) on
name, birth date, sex, phone, address and ID similarity; two thresholds give auto-link, review
queue and new person; stewards' decisions win. person_key is HMAC-SHA256(secret, anchor), stable
across runs (state in the lake's ``empi`` schema). Every mart reads person keys from here.

``id_number`` here is the standardised number when it is usable as a key (valid GB 11643, not a
placeholder, agreeing with the stated birth date, sex and surname), else null: marts that look persons up by ID number never match a typo or a
placeholder shared by many people. The number as sent is ``id_number_sent``.

Incremental: a run links only the new and changed identities against the existing persons (the
EMPI's state in the lake's ``empi`` schema) and returns only the rows that changed, which dbt
merges by identity_key (delete+insert); rows of identities no longer sent are deleted.
``dbt run --full-refresh`` (or the first run) re-links and retrains everything.
"""


def model(dbt, session):
    dbt.config(materialized="incremental", unique_key="identity_key", incremental_strategy="delete+insert",
               on_schema_change="fail")
    from empi.lake import run_in_lake

    identities = dbt.ref("int_identities_unioned")
    database = dbt.this.database
    # read once (the union of three deduplicating views): the EMPI, the result and the diff use it
    identities.create_view("__empi_identities_view", replace=True)
    session.execute("CREATE OR REPLACE TEMP TABLE __empi_identities AS SELECT * FROM __empi_identities_view")
    links, _ = run_in_lake(session, "__empi_identities", database, full=not dbt.is_incremental)
    session.register("__empi_links", links)
    session.execute("""
        create or replace temp table __empi_rows as
        select
            u.identity_key,
            u.institution_code,
            u.source_dataset,
            u.source_id,
            u.dataset_priority,
            u.id_type_code,
            l.id_number_std as id_number,
            u.id_number as id_number_sent,
            u.is_valid_id_number,
            u.name,
            u.sex_code,
            u.birth_date,
            u.ethnicity_code,
            u.phone,
            u.address_division_code,
            u.address_text,
            u.source_updated_at,
            u._batch_id,
            u._ingested_at,
            l.person_key,
            l.match_method,
            l.match_probability
        from __empi_identities u
        join __empi_links l using (identity_key)
    """)
    if not dbt.is_incremental:
        return session.sql("select * from __empi_rows")
    session.execute(f"DELETE FROM {dbt.this} WHERE identity_key NOT IN (SELECT identity_key FROM __empi_rows)")
    return session.sql(f"SELECT * FROM __empi_rows EXCEPT SELECT * FROM {dbt.this}")
