"""Deterministic identity resolution on the real stages, with the traps of real data."""

from __future__ import annotations

import duckdb

from tests.warehouse.helpers import run_through_identity, write_marketplace_orders, write_store_members, write_web_users


def _review(settings) -> list[tuple]:
    with duckdb.connect(str(settings.work_db), read_only=True) as con:
        return con.execute("""SELECT source_a, source_customer_id_a, source_b, source_customer_id_b, reason
                              FROM identity.review ORDER BY ALL""").fetchall()


def test_same_person_links_across_sources_but_a_family_sharing_a_phone_does_not(settings):
    write_web_users(settings.inbox, [
        {"user_id": "U1", "email": " Li.Na@Example.com ", "mobile": "13812345678", "real_name": "李娜"},
        {"user_id": "U2", "email": "wang@example.com", "mobile": None, "real_name": "王伟", "member_card": "M2"},
    ])
    write_store_members(settings.inbox, [
        {"会员卡号": "M1", "姓名": "李娜", "手机号": "+86 138-1234-5678"},   # same person as U1 (phone + name)
        {"会员卡号": "M9", "姓名": "李强", "手机号": "13812345678", "生日": "1962/05/17"},  # her father, same phone
        {"会员卡号": "M2", "姓名": "王伟", "手机号": "13900001111"},         # U2 bound this card
    ])
    ids = run_through_identity(settings)
    assert ids[("web", "U1")] == ids[("store", "M1")]
    assert ids[("store", "M9")] != ids[("store", "M1")]
    assert ids[("web", "U2")] == ids[("store", "M2")]
    assert len(set(ids.values())) == 3


def test_phone_and_birth_date_or_name_birth_date_and_city_link_without_a_default_birthday(settings):
    write_web_users(settings.inbox, [
        {"user_id": "U1", "mobile": "13812345678", "real_name": None, "birthday": "1985-03-09"},
        {"user_id": "U2", "mobile": None, "real_name": "赵敏", "birthday": "1979-11-02", "city": "杭州"},
        {"user_id": "U3", "mobile": "13955556666", "real_name": None},            # default birthday 1990-01-01
    ])
    write_store_members(settings.inbox, [
        {"会员卡号": "M1", "姓名": "周芷若", "手机号": "13812345678", "生日": "1985/03/09"},  # U1: phone + birthday
        {"会员卡号": "M2", "姓名": "赵敏", "手机号": "13700000001", "生日": "1979/11/02", "城市": "杭州"},  # U2
        {"会员卡号": "M3", "姓名": "张无忌", "手机号": "13955556666", "生日": "1990/01/01"},  # a form's default
        {"会员卡号": "M4", "姓名": "赵敏", "手机号": "13700000002", "生日": "1979/11/02", "城市": "北京"},  # not U2
    ])
    ids = run_through_identity(settings)
    assert ids[("web", "U1")] == ids[("store", "M1")]
    assert ids[("web", "U2")] == ids[("store", "M2")] != ids[("store", "M4")]
    assert ids[("web", "U3")] != ids[("store", "M3")]


def test_placeholder_contacts_never_link(settings):
    write_web_users(settings.inbox, [
        {"user_id": "U1", "email": "test@test.com", "mobile": "13800000000", "real_name": "张三"},
        {"user_id": "U2", "email": "TEST@test.com", "mobile": "13800000000", "real_name": "张三"},
    ])
    ids = run_through_identity(settings)
    assert ids[("web", "U1")] != ids[("web", "U2")]


def test_an_identifier_shared_by_too_many_records_stops_linking(settings):
    write_web_users(settings.inbox, [
        {"user_id": f"U{i}", "email": "shop-counter@example.com", "mobile": None, "real_name": None}
        for i in range(12)])
    ids = run_through_identity(settings)
    assert len(set(ids.values())) == 12


def test_ids_are_stable_across_runs_and_the_oldest_survives_a_merge(settings):
    write_web_users(settings.inbox, [
        {"user_id": "U1", "email": "a@example.com", "mobile": None, "real_name": "甲"},
        {"user_id": "U2", "email": "b@example.com", "mobile": None, "real_name": "乙"},
    ])
    first = run_through_identity(settings, "r1")
    assert first[("web", "U1")] != first[("web", "U2")]
    # The next delivery shows U2 bound the same member card as a store member U1 also has.
    write_web_users(settings.inbox, [
        {"user_id": "U1", "email": "a@example.com", "member_card": "M7", "updated_at": "2025-02-01T00:00:00Z"},
        {"user_id": "U2", "email": "b@example.com", "member_card": "M7", "updated_at": "2025-02-01T00:00:00Z"},
        {"user_id": "U3", "email": "c@example.com"},
    ], name="users_2.jsonl")
    second = run_through_identity(settings, "r2")
    oldest = min(first[("web", "U1")], first[("web", "U2")])
    assert second[("web", "U1")] == second[("web", "U2")] == oldest
    assert second[("web", "U3")] not in first.values()
    with duckdb.connect(str(settings.work_db), read_only=True) as con:
        changes = con.execute("SELECT run_id, change, customer_id, other_ids FROM ops.identity_changes").fetchall()
    assert changes == [("r2", "merge", oldest, [max(first[("web", "U1")], first[("web", "U2")])])]
    third = run_through_identity(settings, "r3")
    assert third == second


def test_an_empty_blocklist_blocks_nothing(settings, monkeypatch):
    import warehouse.identity as identity

    config = identity.load_identity_config()
    config["blocklist"] = {"member_id": [], "email_key": [], "phone_e164": [], "birth_date": []}
    monkeypatch.setattr(identity, "load_identity_config", lambda: config)
    write_web_users(settings.inbox, [{"user_id": "U1", "email": "a@example.com", "member_card": "M1"}])
    write_store_members(settings.inbox, [{"会员卡号": "M1", "姓名": "王芳", "手机号": "13812345678"}])
    ids = run_through_identity(settings)
    assert ids[("web", "U1")] == ids[("store", "M1")]


def test_a_name_in_traditional_characters_links_like_its_simplified_form(settings):
    write_store_members(settings.inbox, [{"会员卡号": "M1", "姓名": "陈丽华", "手机号": "13812345678"}])
    write_marketplace_orders(settings.inbox, [{"买家昵称": "tb_chen", "收货人": "陳麗華", "联系电话": "138****5678"},
                                              {"买家昵称": "tb_other", "收货人": "陳麗", "联系电话": "138****5678"}])
    ids = run_through_identity(settings)
    assert ids[("marketplace", "tb_chen")] == ids[("store", "M1")] != ids[("marketplace", "tb_other")]


def test_a_customer_never_holds_two_member_ids(settings):
    # Two card holders typed the same email into their web accounts: the email link is not made.
    write_web_users(settings.inbox, [
        {"user_id": "U1", "email": "family@example.com", "member_card": "M1", "real_name": "李娜"},
        {"user_id": "U2", "email": "family@example.com", "member_card": "M2", "real_name": "李强"},
    ])
    write_store_members(settings.inbox, [{"会员卡号": "M1", "姓名": "李娜", "手机号": "13812345678"},
                                         {"会员卡号": "M2", "姓名": "李强", "手机号": "13912345678"}])
    ids = run_through_identity(settings)
    assert ids[("web", "U1")] == ids[("store", "M1")]
    assert ids[("web", "U2")] == ids[("store", "M2")]
    assert ids[("web", "U1")] != ids[("web", "U2")]
    assert [r[-1] for r in _review(settings)] == ["email link not made: would give one customer 2 member ids"]


def test_no_customer_grows_past_max_cluster_size(settings, monkeypatch):
    import warehouse.identity as identity

    config = identity.load_identity_config()
    config["max_cluster_size"] = 3
    monkeypatch.setattr(identity, "load_identity_config", lambda: config)
    write_web_users(settings.inbox, [
        {"user_id": f"U{i}", "email": "shared@example.com", "member_card": "M1" if i < 2 else None}
        for i in range(5)])
    ids = run_through_identity(settings)
    assert ids[("web", "U0")] == ids[("web", "U1")]  # the member id link (2 records) is made first
    assert len(set(ids.values())) == 4               # the email would make one customer of 5
    assert {r[-1] for r in _review(settings)} == {"email link not made: would give one customer 5 records"}
