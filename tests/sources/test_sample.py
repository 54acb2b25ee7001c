"""The sample generator: deterministic, realistic shapes, traps present."""

from __future__ import annotations

import csv
import hashlib
import json
from datetime import date

import pytest

from sources.sample import PLACEHOLDER_PHONE, generate


def _digest(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_and_end_date_give_the_same_bytes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    generate(a, customers=150, days=400, seed=3, end_date=date(2026, 1, 31))
    generate(b, customers=150, days=400, seed=3, end_date=date(2026, 1, 31))
    assert _digest(a) == _digest(b)
    generate(b, customers=150, days=400, seed=4, end_date=date(2026, 1, 31))
    assert _digest(a) != _digest(b)


def test_volume_scales_the_lines_and_events_of_the_same_people(tmp_path):
    usual, more = tmp_path / "usual", tmp_path / "more"
    generate(usual, customers=400, days=200, seed=5, end_date=date(2026, 1, 31))
    generate(more, customers=400, days=200, seed=5, end_date=date(2026, 1, 31), volume=2.5)

    def people_by_source(folder):  # the CRM exports are drawn after the others, from where the draws got to
        truth = csv.DictReader((folder / "ground_truth.csv").read_text().splitlines())
        return sorted((t["source"], t["person_id"]) for t in truth if t["source"] in ("web", "store", "marketplace"))

    assert people_by_source(usual) == people_by_source(more)

    def lines_and_events(folder):
        orders = [json.loads(line) for line in (folder / "web" / "orders.jsonl").read_text().splitlines()]
        events = [json.loads(line) for line in (folder / "web" / "events.jsonl").read_text().splitlines()]
        sessions = [e["session_id"] for e in events if e["user_id"]]
        return (len(orders), sum(len(o["items"]) for o in orders) / len(orders),
                len(sessions), len(sessions) / len(set(sessions)))

    orders, lines, events, per_session = lines_and_events(usual)
    orders_more, lines_more, events_more, per_session_more = lines_and_events(more)
    assert orders_more == orders                        # the same orders, each with more lines
    assert 1.8 < lines < 2.2 and 4.1 < lines_more < 4.9  # one to 3 lines, one to round(7.5) = 8
    assert 1.8 < per_session < 2.2 and 4.1 < per_session_more < 4.9 and events_more > 2 * events


def test_accounts_spread_the_same_people_and_orders_over_more_source_records(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    arguments = dict(customers=400, days=200, seed=5, end_date=date(2026, 1, 31))
    usual = generate(one, **arguments)
    more = generate(two, **arguments, accounts=2)

    def truth(folder):
        return [(t["source"], t["source_customer_id"], t["person_id"])
                for t in csv.DictReader((folder / "ground_truth.csv").read_text().splitlines())]

    assert {(s, p) for s, _, p in truth(one)} == {(s, p) for s, _, p in truth(two)}  # the same people, sources
    assert usual["source_customer_records"] == len(truth(one))
    assert 1.7 * usual["source_customer_records"] < more["source_customer_records"] == len(truth(two))
    for key in ("web_events", "web_orders", "store_pos_lines", "marketplace_rows", "zoho_contacts", "fxiaoke_customers"):
        assert more[key] == usual[key], key  # the same orders, lines and events, under more ids

    person_of = {(s, i): p for s, i, p in truth(two)}
    orders = [json.loads(line) for line in (two / "web" / "orders.jsonl").read_text().splitlines()]
    owners = {o["user_id"] for o in orders}
    assert any("-" in u for u in owners)  # orders placed from a second account
    usual_orders = [json.loads(line) for line in (one / "web" / "orders.jsonl").read_text().splitlines()]
    assert [person_of[("web", o["user_id"])] for o in orders] == \
        ["P" + o["user_id"][1:] for o in usual_orders]  # each order still its person's
    for role in json.loads((two / "planted.json").read_text()).values():  # tests rely on their ids
        assert sorted(s for s, _, p in truth(two) if p == role["person_id"]) == role["sources"]  # one account a source

    with pytest.raises(ValueError, match="accounts must be 1 or more"):
        generate(tmp_path / "none", **arguments, accounts=0.5)


def test_store_exports_are_gbk_with_chinese_headers_and_mixed_phone_formats(sample_inbox):
    raw = (sample_inbox / "store" / "pos_transactions.csv").read_bytes()
    try:
        raw.decode("utf-8")
        decodes_as_utf8 = True
    except UnicodeDecodeError:
        decodes_as_utf8 = False
    assert not decodes_as_utf8, "the POS export must be GBK, as real store systems write it"
    rows = list(csv.DictReader(raw.decode("gbk").splitlines()))
    assert {"会员卡号", "手机号", "交易时间", "金额"} <= set(rows[0])
    phones = {r["手机号"] for r in rows}
    assert any(p.startswith("+86 ") for p in phones)
    assert any(p.count("-") == 2 for p in phones)
    assert any(p.startswith("86") and len(p) == 13 for p in phones)


def test_traps_are_planted(sample_inbox, planted):
    members = list(csv.DictReader((sample_inbox / "store" / "members.csv").read_text("gbk").splitlines()))
    digits = [m["手机号"].replace("-", "").replace("+86 ", "")[-11:] for m in members]
    shared = {p for p in digits if digits.count(p) > 1 and p != PLACEHOLDER_PHONE}
    assert shared, "families sharing a phone are part of the sample"
    users = [json.loads(line) for line in (sample_inbox / "web" / "users.jsonl").read_text().splitlines()]
    assert any(u["email"] != u["email"].strip().lower() for u in users), "email case/whitespace noise"
    assert len({u["user_id"] for u in users}) < len(users), "a user exported twice"
    market = {p.name: p.read_bytes() for p in (sample_inbox / "marketplace").glob("*.csv")}
    resent = [n for n in market if n.endswith("_resent.csv")]
    assert resent and market[resent[0]] == market[resent[0].replace("_resent", "")], "a file delivered twice"
    assert all("****" in b.decode("utf-8-sig") for b in market.values()), "masked marketplace phones"
    truth = list(csv.DictReader((sample_inbox / "ground_truth.csv").read_text().splitlines()))
    people_sources = {}
    for t in truth:
        people_sources.setdefault(t["person_id"], set()).add(t["source"])
    assert any(len(s) == 3 for s in people_sources.values()), "someone is in all three sources"
    assert set(planted) == {"champion", "lapsed_big_spender", "brand_new_buyer", "prospect", "returning"}
