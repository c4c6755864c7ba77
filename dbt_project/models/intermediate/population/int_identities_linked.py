"""Every source identity with the person it belongs to: one row per identity_key.

The master patient index (package ``empi``): identities standardised, linked deterministically on
an agreeing valid ID number (or passport + birth date + sex), then probabilistically (Splink) on
name, birth date, sex, phone, address and ID similarity; two thresholds give auto-link, review
queue and new person; stewards' decisions win. person_key is HMAC-SHA256(secret, anchor), stable
across runs (state in the lake's ``empi`` schema). Every mart reads person keys from here.

``id_number`` here is the standardised number when it is usable as a key (valid GB 11643, not a
placeholder, agreeing with the stated birth date, sex and surname), else null: marts that look persons up by ID number never match a typo or a
placeholder shared by many people. The number as sent is ``id_number_sent``.
"""


def model(dbt, session):
    dbt.config(materialized="table")
    from empi.lake import run_in_lake

    identities = dbt.ref("int_identities_unioned")
    database = dbt.this.database
    identities.create_view("__empi_identities", replace=True)
    links, _ = run_in_lake(session, "__empi_identities", database)
    session.register("__empi_links", links)
    return session.sql("""
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
