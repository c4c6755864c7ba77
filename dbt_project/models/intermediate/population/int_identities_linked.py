"""Every source identity with the person it belongs to: one row per identity_key.

The master patient index (package ``empi``): identities standardised, linked deterministically on
an agreeing valid ID number (or passport + birth date + sex), then probabilistically (Splink) on
name, birth date, sex, phone, address and ID similarity; two thresholds give auto-link, review
queue and new person; stewards' decisions win. person_key is HMAC-SHA256(secret, anchor), stable
across runs (state in the lake's ``empi`` schema). Every mart reads person keys from here.

``id_number`` here is the standardised number when it is usable as a key (valid GB 11643, not a
placeholder, agreeing with the stated birth date, sex and surname), else null: marts that look persons up by ID number never match a typo or a
placeholder shared by many people. The number as sent is ``id_number_sent``.

Incremental: a run links only the new and changed identities (the rows of batches this table has
not seen) and the clusters they touch (the EMPI's state in the lake's ``empi`` schema; everyone
else's state is neither read in full nor rewritten) and returns only the rows that changed, which
dbt merges by identity_key (delete+insert); rows of identities no longer sent are deleted.
``dbt run --full-refresh`` (or the first run) re-links and retrains everything.
"""


_COLUMNS = """
    u.identity_key, u.institution_code, u.source_dataset, u.source_id, u.dataset_priority, u.id_type_code,
    {id_number} as id_number, u.id_number as id_number_sent, u.is_valid_id_number, u.name, u.sex_code,
    u.birth_date, u.ethnicity_code, u.phone, u.address_division_code, u.address_text, u.source_updated_at,
    u._batch_id, u._ingested_at, {person_key} as person_key, {match_method} as match_method,
    {match_probability} as match_probability
"""


def model(dbt, session):
    dbt.config(materialized="incremental", unique_key="identity_key", incremental_strategy="delete+insert",
               on_schema_change="fail")
    from empi.lake import run_in_lake

    identities = dbt.ref("int_identities_unioned")
    database = dbt.this.database
    identities.create_view("__empi_identities_view", replace=True)
    if not dbt.is_incremental:
        # read once (the union of three deduplicating views): the EMPI and the result use it
        session.execute("CREATE OR REPLACE TEMP TABLE __empi_identities AS SELECT * FROM __empi_identities_view")
        links, _ = run_in_lake(session, "__empi_identities", database, full=True)
        session.register("__empi_links", links)
        cols = _COLUMNS.format(id_number="l.id_number_std", person_key="l.person_key",
                               match_method="l.match_method", match_probability="l.match_probability")
        return session.sql(f"select {cols} from __empi_identities u join __empi_links l using (identity_key)")
    # Incremental: the rows of batches this table has not seen yet may be new or changed identities;
    # the EMPI links them and the clusters they touch, and returns those identities only. Written:
    # the touched identities and the new batches' rows (an identity re-sent unchanged keeps its
    # person, with the new batch's columns), only where a column differs.
    this = dbt.this
    session.execute(f"""CREATE OR REPLACE TEMP TABLE __empi_changed AS
                        SELECT * FROM __empi_identities_view
                        WHERE _batch_id IN (SELECT _batch_id FROM __empi_identities_view
                                            EXCEPT SELECT _batch_id FROM {this})""")
    links, _ = run_in_lake(session, "__empi_identities_view", database, changed="__empi_changed", touched_only=True)
    session.register("__empi_links", links)
    pick = "case when l.identity_key is not null then l.{0} else t.{1} end"
    cols = _COLUMNS.format(id_number=pick.format("id_number_std", "id_number"),
                           person_key=pick.format("person_key", "person_key"),
                           match_method=pick.format("match_method", "match_method"),
                           match_probability=pick.format("match_probability", "match_probability"))
    # the rows held for those identities, read once
    session.execute(f"""
        create or replace temp table __empi_held as
        select * from {this}
        where identity_key in (select identity_key from __empi_links union select identity_key from __empi_changed)
    """)
    session.execute(f"""
        create or replace temp table __empi_rows as
        select {cols}
        from (select * from __empi_identities_view
              where identity_key in (select identity_key from __empi_links
                                     union select identity_key from __empi_changed)) u
        left join __empi_links l using (identity_key)
        left join __empi_held t using (identity_key)
    """)
    gone = session.execute(f"SELECT count(*) FROM {this} ANTI JOIN __empi_identities_view USING (identity_key)"
                           ).fetchone()[0]
    if gone:   # identities no longer sent
        session.execute(f"DELETE FROM {this} WHERE identity_key NOT IN (SELECT identity_key FROM __empi_identities_view)")
    return session.sql("SELECT * FROM __empi_rows EXCEPT SELECT * FROM __empi_held")
