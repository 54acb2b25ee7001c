"""Deterministic sample exports for the three built-in sources, with the traps of real data.

``generate(out, customers, days, seed, end_date, volume, accounts)`` writes, for the same
arguments, always the same bytes:

- ``web/``: ``users.jsonl`` (registrations, emails with case/whitespace noise, a few repeated
  rows), ``events.jsonl`` (page_view, search, add_to_cart, login; UTC ISO), ``orders.jsonl``;
- ``store/``: GBK CSVs with Chinese headers, ``members.csv`` and ``pos_transactions.csv``
  (local time, phones as 138-1234-5678 / +86 13812345678 / 8613812345678), and
  ``pos_transactions_pickups.csv``: marketplace orders picked up in a store, recorded again
  with the platform's order number (the same order through two sources);
- ``marketplace/``: two overlapping order exports (an order re-exported, some later refunded)
  with masked phones, plus the newer one delivered a second time under another name;
- ``zoho_crm/``: a Zoho CRM contacts export and a cases export (service tickets: complaints,
  questions, returns) (CSV, English field names);
- ``fxiaoke/``: a 纷享销客 customer export (XLSX, Chinese headers);
- ``ground_truth.csv``: the true person behind each (source, source_customer_id);
- ``planted.json``: customers with known behaviour that tests assert on.

Traps: the same person in two or three sources, families sharing a phone, marketplace names in
traditional characters, an order through two sources, placeholder contacts (13800000000,
test@test.com), a few bad values in every source (unreadable,
impossible and future dates, broken emails, negative order totals, an order twice in one
export), and about 1% children under 14 (sensitive personal information).

``volume`` (default 1) scales the rows each person leaves behind, not the people: an order has
one to ``round(3 * volume)`` lines and a web session as many events (two of each on average at
volume 1, 4.5 at volume 2.5).  Who is a web, store or marketplace customer, orders per person
and the profiles do not change (the CRM exports, drawn last, pick about as many other people), so
neither does the number of source customer records.  At 1M customers volume 1 gives about 1.65M
source customer records, 9M order lines and 23M events; volume 2.5 about 20M order lines and
52M events.

``accounts`` (default 1) is how many accounts a person holds, on average, in each of the web,
store and marketplace sources they use: above 1, a person has one account plus a Poisson draw of
``accounts - 1`` more (at most ``MAX_ACCOUNTS`` in all), as people re-register with another
email, enrol again for a new card or buy under a second marketplace nickname.  The extra
accounts are drawn from a stream of their own, so the people, their orders, lines and events
are those of the same sample with one account each, spread over more ids (round-robin), and the
ground truth names every account's person.  At 1M customers ``accounts=2`` gives 3.4M source
customer records in the ground truth (1.74M with one account each): with ``volume=2.5``, about
the performance issue's 3M records, 20M order lines and 50M events.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import zipfile
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import opencc

SURNAMES = list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤")
GIVEN = list("伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华建国志红玉兰海燕子涵浩然欣怡梓轩一诺雨桐宇航思远佳琪晨曦")
PLACES = [("上海", "上海"), ("北京", "北京"), ("广东", "广州"), ("广东", "深圳"), ("浙江", "杭州"),
          ("江苏", "南京"), ("江苏", "苏州"), ("四川", "成都"), ("湖北", "武汉"), ("陕西", "西安"),
          ("山东", "青岛"), ("福建", "厦门"), ("河南", "郑州"), ("湖南", "长沙")]
CATEGORIES = [("apparel", "服饰"), ("beauty", "美妆"), ("food", "食品"), ("home", "家居"), ("digital", "数码")]
DOMAINS = ["qq.com", "163.com", "126.com", "gmail.com", "outlook.com", "sina.com"]
MOBILE_PREFIXES = ["130", "131", "132", "135", "136", "137", "138", "139", "150", "151", "152",
                   "157", "158", "159", "186", "187", "188", "189"]
PLACEHOLDER_PHONE = "13800000000"
PLACEHOLDER_EMAIL = "test@test.com"
MAX_ACCOUNTS = 7  # a person's accounts in one source: store cards take the 6 numbers after the first
SHANGHAI = ZoneInfo("Asia/Shanghai")

# Behaviour profiles: share of people, orders (min, max), last order age window in days.
PROFILES = {
    "loyal": (0.10, (8, 30), (0, 20)),
    "regular": (0.25, (3, 8), (0, 90)),
    "occasional": (0.25, (1, 2), (0, 400)),
    "lapsed": (0.15, (2, 10), (200, 500)),
    "new": (0.05, (1, 1), (0, 25)),
    "prospect": (0.20, (0, 0), (0, 0)),
}

_TRADITIONAL = opencc.OpenCC("s2t")

@dataclass
class Person:
    pid: str
    name: str
    gender: str
    birth: date
    province: str
    city: str
    phone: str
    email: str
    profile: str
    sources: set[str]
    registered: datetime
    order_times: list[datetime] = field(default_factory=list)
    active_days: list[date] = field(default_factory=list)
    household_phone: str | None = None
    planted: bool = False  # planted customers skip the random traps so tests can rely on them

    @property
    def card(self) -> str:
        return f"M{int(self.pid[1:]) * 7 + 100000:08d}"


class _Gen:
    def __init__(self, seed: int | list[int], end: date, days: int, volume: float = 1.0, accounts: float = 1.0) -> None:
        self.rng = np.random.default_rng(seed)
        self.end = end
        self.days = days
        self.volume = volume
        self.accounts = accounts
        self.end_dt = datetime.combine(end, datetime.min.time(), SHANGHAI) + timedelta(hours=21)
        self.used_phones: set[str] = {PLACEHOLDER_PHONE}
        # The extra accounts' own stream: drawing them leaves every other draw as it was.
        self.extra = _Gen([seed, 1], end, days, volume) if accounts > 1 else None

    def accounts_of(self, person: Person) -> int:
        """How many accounts ``person`` holds in one source (planted customers hold one)."""
        if self.extra is None or person.planted:
            return 1
        return min(MAX_ACCOUNTS, 1 + int(self.extra.rng.poisson(self.accounts - 1)))

    def pick(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def how_many(self, most: int) -> int:
        """1 to ``most`` items (order lines, a session's events), ``most`` scaled by the volume."""
        return int(self.rng.integers(1, 1 + max(1, round(most * self.volume))))

    def phone(self) -> str:
        while True:
            p = self.pick(MOBILE_PREFIXES) + f"{int(self.rng.integers(10**8)):08d}"
            if p not in self.used_phones:
                self.used_phones.add(p)
                return p

    def moment(self, days_ago: float) -> datetime:
        """A moment ``days_ago`` days before the end of the end date, at a shop-hours time."""
        day = self.end - timedelta(days=int(days_ago))
        hour = int(self.rng.integers(9, 22))
        return datetime(day.year, day.month, day.day, hour, int(self.rng.integers(60)),
                        int(self.rng.integers(60)), tzinfo=SHANGHAI)


def _person(g: _Gen, i: int, profile: str) -> Person:
    name = g.pick(SURNAMES) + "".join(g.pick(GIVEN) for _ in range(int(g.rng.integers(1, 3))))
    province, city = g.pick(PLACES)
    birth = date(1950, 1, 1) + timedelta(days=int(g.rng.integers(0, 365 * 55)))
    if i % 97 == 13:  # a child's account (registered by a parent): under 14 at the end date
        birth = date(g.end.year - 10, birth.month, min(birth.day, 28))
    sources = {s for s, p in (("web", 0.6), ("store", 0.5), ("marketplace", 0.4)) if g.rng.random() < p}
    sources = sources or {g.pick(["web", "store", "marketplace"])}
    email = f"{g.pick(['lily', 'mike', 'star', 'sun', 'moon', 'tiger', 'jade', 'leo'])}{i:05d}@{g.pick(DOMAINS)}"
    person = Person(f"P{i:06d}", name, g.pick(["M", "F"]), birth, province, city, g.phone(), email,
                    profile, sources, g.end_dt)
    _behave(g, person)
    return person


def _behave(g: _Gen, person: Person) -> None:
    """Order times and active days from the profile, inside the history window."""
    _, (lo, hi), (age_lo, age_hi) = PROFILES[person.profile]
    n = int(g.rng.integers(lo, hi + 1))
    age_hi = min(age_hi, g.days - 1)
    if n:
        last = float(g.rng.integers(age_lo, max(age_lo, age_hi) + 1))
        first = last if n == 1 else float(g.rng.uniform(last + 30, max(last + 31, g.days - 1)))
        ages = sorted({int(a) for a in g.rng.uniform(last, first, n - 1)} | {int(last)}, reverse=True)
        person.order_times = [g.moment(a) for a in ages]
    oldest = max([(g.end_dt - t).days for t in person.order_times] + [int(g.rng.integers(5, g.days))])
    person.registered = g.moment(min(oldest + int(g.rng.integers(0, 30)), g.days))
    if "web" in person.sources:
        rate = {"loyal": 0.5, "regular": 0.2, "occasional": 0.05, "new": 0.3, "prospect": 0.08}.get(person.profile, 0.0)
        window = min(120, g.days)
        days = np.nonzero(g.rng.random(window) < rate)[0]
        person.active_days = [g.end - timedelta(days=int(d)) for d in days]


def _planted(g: _Gen, start: int) -> list[tuple[str, Person]]:
    """Customers with known behaviour; their expected tags are in planted.json."""
    specs = [
        ("champion", "loyal", {"web", "store"}, [2 + 7 * k for k in range(40)], 22),
        ("lapsed_big_spender", "lapsed", {"store", "marketplace"}, [560 + 6 * k for k in range(28)], 0),
        ("brand_new_buyer", "new", {"web"}, [3], 2),
        ("prospect", "prospect", {"web"}, [], 3),
        ("returning", "regular", {"web", "store"}, [10, 400, 430, 470], 1),
    ]
    planted = []
    for k, (role, profile, sources, ages, active) in enumerate(specs):
        p = _person(g, start + k, profile)
        p.sources, p.planted = sources, True
        p.birth = p.birth.replace(year=min(p.birth.year, g.end.year - 30))  # adults: marketing tags apply
        p.order_times = [g.moment(a) for a in sorted([a for a in ages if a < g.days], reverse=True)]
        p.active_days = [g.end - timedelta(days=d) for d in range(active)]
        oldest = max([(g.end_dt - t).days for t in p.order_times] + [5])
        p.registered = g.moment(oldest + 1)
        planted.append((role, p))
    return planted


def _noisy_email(g: _Gen, email: str) -> str:
    r = g.rng.random()
    if r < 0.2:
        return email.upper()
    if r < 0.35:
        return f"  {email[0].upper()}{email[1:]} "
    return email


def _mixed_phone(g: _Gen, phone: str) -> str:
    return g.pick([phone, f"{phone[:3]}-{phone[3:7]}-{phone[7:]}", f"+86 {phone}", f"86{phone}"])


def _lines(g: _Gen, big: bool) -> list[tuple[str, int, str, int, float]]:
    """(sku, category index, category, quantity, unit price) for one order."""
    out = []
    for _ in range(g.how_many(3)):
        c = int(g.rng.integers(len(CATEGORIES)))
        price = round(float(g.rng.lognormal(6.5 if big else 4.5, 0.5)), 2)
        out.append((f"SKU{c}{int(g.rng.integers(1000)):03d}", c, CATEGORIES[c][0], int(g.rng.integers(1, 3)), price))
    return out


def _iso_utc(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _write_csv(path: Path, header: list[str], rows: list[list], encoding: str) -> None:
    with path.open("w", encoding=encoding, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def generate(out: Path, customers: int = 2000, days: int = 730, seed: int = 7,
             end_date: date | None = None, volume: float = 1.0, accounts: float = 1.0) -> dict:
    """Write the sample exports under ``out`` and return a summary of what was written."""
    if not volume > 0:
        raise ValueError(f"volume must be above 0, not {volume}")
    if not accounts >= 1:
        raise ValueError(f"accounts must be 1 or more (accounts a person holds in a source), not {accounts}")
    end = end_date or (datetime.now(SHANGHAI).date() - timedelta(days=1))
    g = _Gen(seed, end, days, volume, accounts)
    names, weights = zip(*[(k, v[0]) for k, v in PROFILES.items()])
    weights = np.array(weights) / sum(weights)
    n_regular = max(customers - 5, 0)
    people = [_person(g, i, str(g.rng.choice(names, p=weights))) for i in range(n_regular)]
    planted = _planted(g, n_regular)
    people += [p for _, p in planted]
    # Families: some store members registered with a relative's phone.
    store_people = [p for p in people if "store" in p.sources and p.profile != "prospect"]
    for a, b in zip(store_people[0:60:2], store_people[1:60:2]):
        b.household_phone = a.phone

    for folder in ("web", "store", "marketplace", "zoho_crm", "fxiaoke"):
        shutil.rmtree(out / folder, ignore_errors=True)
        (out / folder).mkdir(parents=True)
    truth: list[tuple[str, str, str]] = []
    counts = {}
    counts.update(_write_web(g, out / "web", people, truth))
    counts.update(_write_store(g, out / "store", people, truth))
    counts.update(_write_marketplace(g, out / "marketplace", people, truth))
    counts.update(_write_crm(g, out, people, truth))
    _write_csv(out / "ground_truth.csv", ["source", "source_customer_id", "person_id"],
               [list(t) for t in truth], "utf-8")
    plant_info = {role: {"person_id": p.pid, "profile": p.profile, "sources": sorted(p.sources),
                         "orders": len(p.order_times)} for role, p in planted}
    (out / "planted.json").write_text(json.dumps(plant_info, ensure_ascii=False, indent=2), encoding="utf-8")
    return {"end_date": end.isoformat(), "people": len(people), "source_customer_records": len(truth), **counts}


def _channel_orders(g: _Gen, person: Person, channel: str) -> list[datetime]:
    """The person's orders placed through ``channel`` (each order goes to one of their sources)."""
    channels = sorted(person.sources)
    return [t for k, t in enumerate(person.order_times)
            if channels[(k + int(person.pid[1:])) % len(channels)] == channel]


def _write_web(g: _Gen, folder: Path, people: list[Person], truth: list) -> dict:
    users, orders = [], []
    event_file = (folder / "events.jsonl").open("w", encoding="utf-8")  # written as made: the largest export
    events = 0

    def event(row: dict) -> None:
        nonlocal events
        event_file.write(json.dumps(row, ensure_ascii=False) + "\n")
        events += 1

    for p in people:
        if "web" not in p.sources:
            continue
        uid = f"U{p.pid[1:]}"
        uids = [uid] + [f"{uid}-{j}" for j in range(2, g.accounts_of(p) + 1)]
        truth.extend(("web", u, p.pid) for u in uids)
        email = _noisy_email(g, p.email)
        if not p.planted and g.rng.random() < 0.01:
            email = PLACEHOLDER_EMAIL
        elif not p.planted and g.rng.random() < 0.004:
            email = p.email.replace("@", " at ")  # a broken email the validator must catch
        bound_card = "store" in p.sources and (p.planted or g.rng.random() < 0.4)
        user = {"user_id": uid, "email": email,
                "mobile": p.phone if p.planted or g.rng.random() < 0.7 else None,
                "real_name": p.name if p.planted or g.rng.random() < 0.75 else None,
                "member_card": p.card if bound_card else None,
                "nickname": f"nick_{uid.lower()}", "gender": p.gender, "birthday": p.birth.isoformat(),
                "province": p.province, "city": p.city, "registered_at": _iso_utc(p.registered),
                "email_opt_in": bool(g.rng.random() < 0.6), "updated_at": _iso_utc(p.registered)}
        users.append(user)
        if g.rng.random() < 0.03:  # the same user exported again after a profile update
            users.append({**user, "city": p.city, "updated_at": _iso_utc(p.registered + timedelta(days=3))})
        users += [_another_web_account(g.extra, user, p, u, j) for j, u in enumerate(uids[1:], start=2)]
        for k, day in enumerate(p.active_days):
            session = f"S{events:08d}"
            for _ in range(g.how_many(3)):
                t = datetime(day.year, day.month, day.day, int(g.rng.integers(8, 23)), int(g.rng.integers(60)),
                             tzinfo=SHANGHAI)
                event({"event_id": f"E{events:08d}", "user_id": uids[k % len(uids)], "anonymous_id": None,
                       "type": g.pick(["page_view", "page_view", "search", "add_to_cart", "login"]),
                       "ts": _iso_utc(t), "session_id": session})
        for k, t in enumerate(_channel_orders(g, p, "web")):
            lines = _lines(g, p.profile == "lapsed")
            status = "paid" if g.rng.random() < 0.9 else g.pick(["refunded", "cancelled"])
            total = round(sum(q * pr for *_, q, pr in lines), 2)
            if not p.planted and len(orders) % 487 == 486:
                total = -total  # a refund booked as a negative order: validation must set it aside
            orders.append({"order_id": f"W{len(orders):07d}", "user_id": uids[k % len(uids)],
                           "created_at": _iso_utc(t), "total": total, "currency": "CNY",
                           "status": status,
                           "items": [{"sku": s, "category": c, "qty": q, "price": pr} for s, _, c, q, pr in lines]})
    for k in range(events // 20):  # anonymous browsing that links to nobody
        t = g.end_dt - timedelta(hours=int(g.rng.integers(1, 24 * 60)))
        event({"event_id": f"A{k:08d}", "user_id": None, "anonymous_id": f"anon{k:06d}",
               "type": "page_view", "ts": _iso_utc(t), "session_id": f"AS{k:07d}"})
    event_file.close()
    if len(orders) > 300:
        orders.insert(301, dict(orders[300]))  # the same order twice in one export: one copy is set aside
    _write_jsonl(folder / "users.jsonl", users)
    _write_jsonl(folder / "orders.jsonl", orders)
    return {"web_users": len(users), "web_events": events, "web_orders": len(orders)}


def _another_web_account(extra: _Gen, first: dict, p: Person, uid: str, j: int) -> dict:
    """A person's ``j``-th web account ``uid``, next to the ``first``: registered again with
    another mailbox, no member card."""
    local, domain = p.email.split("@")
    another_domain = DOMAINS[(DOMAINS.index(domain) + j) % len(DOMAINS)]
    registered = _iso_utc(p.registered + timedelta(hours=j))
    return {**first, "user_id": uid, "email": _noisy_email(extra, f"{local}.{j}@{another_domain}"),
            "mobile": p.phone if extra.rng.random() < 0.7 else None,
            "real_name": p.name if extra.rng.random() < 0.75 else None, "member_card": None,
            "nickname": f"nick_{uid.lower()}", "registered_at": registered,
            "email_opt_in": bool(extra.rng.random() < 0.6), "updated_at": registered}


def _member(g: _Gen, p: Person, card: str, phone: str, registered: datetime) -> list:
    """A row of the store's member export: ``p`` enrolled with ``card``."""
    return [card, p.name, _mixed_phone(g, phone), "男" if p.gender == "M" else "女", p.birth.strftime("%Y/%m/%d"),
            p.province, p.city, registered.strftime("%Y-%m-%d %H:%M:%S"), "是" if g.rng.random() < 0.5 else "否"]


def _write_store(g: _Gen, folder: Path, people: list[Person], truth: list) -> dict:
    members, lines_out = [], []
    receipt = 0
    for p in people:
        if "store" not in p.sources:
            continue
        first = int(p.pid[1:]) * 7 + 100000  # p.card's number; the 6 after it are free for more cards
        cards = [p.card] + [f"M{first + j - 1:08d}" for j in range(2, g.accounts_of(p) + 1)]
        truth.extend(("store", c, p.pid) for c in cards)
        placeholder = not p.planted and g.rng.random() < 0.01
        phone = p.household_phone or (PLACEHOLDER_PHONE if placeholder else p.phone)
        members.append(_member(g, p, p.card, phone, p.registered))
        members += [_member(g.extra, p, card, phone, p.registered + timedelta(days=j))  # enrolled again elsewhere
                    for j, card in enumerate(cards[1:], start=2)]
        for k, t in enumerate(_channel_orders(g, p, "store")):
            card = cards[k % len(cards)]
            receipt += 1
            kind = "退货" if g.rng.random() < 0.03 else "销售"
            stamp = t.strftime("%Y/%m/%d %H:%M")
            store_id = f"S{int(g.rng.integers(1, 21)):03d}"
            if not p.planted and g.rng.random() < 0.003:
                stamp = t.strftime("%d.%m.%Y %Hh")  # an unreadable timestamp
            for no, (sku, c, _, q, price) in enumerate(_lines(g, p.profile == "lapsed"), start=1):
                lines_out.append([f"R{receipt:08d}", no, card, _mixed_phone(g, phone), stamp, store_id, sku, CATEGORIES[c][1], q,
                                  f"{price:.2f}", f"{q * price:.2f}", kind])
    planted_cards = {p.card for p in people if p.planted}
    future = next((r[0] for r in lines_out[len(lines_out) // 2:] if r[2] not in planted_cards), None)
    for row in lines_out:
        if row[0] == future:
            row[4] = "2099/01/01 10:00"  # a till with a wrong clock: a future date validation sets aside
    _write_csv(folder / "members.csv", ["会员卡号", "姓名", "手机号", "性别", "生日", "省份", "城市", "入会时间", "短信订阅"],
               members, "gbk")
    _write_csv(folder / "pos_transactions.csv",
               ["小票号", "行号", "会员卡号", "手机号", "交易时间", "门店编号", "商品编码", "品类", "数量", "单价", "金额", "交易类型"],
               lines_out, "gbk")
    return {"store_members": len(members), "store_pos_lines": len(lines_out)}


def _write_marketplace(g: _Gen, folder: Path, people: list[Person], truth: list) -> dict:
    rows = []
    n_orders = 0
    for p in people:
        if "marketplace" not in p.sources:
            continue
        nick = f"tb_{p.pid[1:]}_{g.pick(['xiao', 'da', 'happy', 'cat'])}"
        nicks = [nick] + [f"{nick}{j}" for j in range(2, g.accounts_of(p) + 1)]
        truth.extend(("marketplace", n, p.pid) for n in nicks)
        phone = p.household_phone or p.phone
        masked = f"{phone[:3]}****{phone[-4:]}"
        # Some buyers type their name in traditional characters (陳麗華 for 陈丽华).
        receiver = _TRADITIONAL.convert(p.name) if not p.planted and int(p.pid[1:]) % 9 == 4 else p.name
        for k, t in enumerate(_channel_orders(g, p, "marketplace")):
            n_orders += 1
            lines = _lines(g, p.profile == "lapsed")
            total = round(sum(q * pr for *_, q, pr in lines), 2)
            status = "交易成功" if g.rng.random() < 0.9 else g.pick(["已退款", "交易关闭"])
            for no, (sku, c, _, q, price) in enumerate(lines, start=1):
                rows.append([t, f"T{n_orders:09d}", f"T{n_orders:09d}-{no}", nicks[k % len(nicks)], receiver, masked,
                             p.province, p.city, t.strftime("%Y-%m-%d %H:%M:%S"), sku, CATEGORIES[c][1], q, f"{price:.2f}",
                             f"{total:.2f}", status])
    _write_store_pickups(g, folder.parent / "store", people, rows)
    planted_names = {p.name for p in people if p.planted}
    broken = next((r for r in rows[len(rows) // 3:] if r[4] not in planted_names), None)
    if broken is not None:
        broken[8] = "2026-13-45 25:00:00"  # an impossible order time: the row is set aside with its reason
    header = ["订单编号", "子订单编号", "买家昵称", "收货人", "联系电话", "收货省份", "收货城市", "下单时间",
              "商品编码", "商品类目", "购买数量", "商品单价", "实付金额", "订单状态"]
    cut = g.end_dt - timedelta(days=30)
    older = [r[1:] for r in rows if r[0] <= cut]
    # The newer export re-exports the last 60 days; some orders got refunded meanwhile.
    newer = []
    refunded: dict[str, bool] = {}
    for r in rows:
        if r[0] > cut - timedelta(days=30):
            row = r[1:]
            if r[0] <= cut and row[-1] == "交易成功":
                refunded.setdefault(row[0], g.rng.random() < 0.1)
                if refunded[row[0]]:
                    row = row[:-1] + ["已退款"]
            newer.append(row)
    first = folder / f"orders_{(g.end - timedelta(days=30)).strftime('%Y%m%d')}.csv"
    second = folder / f"orders_{g.end.strftime('%Y%m%d')}.csv"
    _write_csv(first, header, older, "utf-8-sig")
    _write_csv(second, header, newer, "utf-8-sig")
    shutil.copyfile(second, folder / f"orders_{g.end.strftime('%Y%m%d')}_resent.csv")
    return {"marketplace_rows": len(older) + len(newer), "marketplace_orders": n_orders}


def _write_store_pickups(g: _Gen, folder: Path, people: list[Person], rows: list[list]) -> None:
    """Some marketplace orders of store members were picked up and paid in a store: the POS
    recorded them again with the platform's order number (平台订单号), the same order twice."""
    cards = {p.pid: p.card for p in people if "store" in p.sources and not p.planted}
    pickups = []
    for t, order, line, nick, *_, sku, category, q, price, _total, status in rows:
        number, pid = int(order[1:]), "P" + nick.split("_")[1]
        if number % 40 == 7 and pid in cards and status == "交易成功" and t < g.end_dt - timedelta(days=3):
            stamp = (t + timedelta(days=2)).strftime("%Y/%m/%d %H:%M")
            pickups.append([f"RP{number:08d}", line.rsplit("-", 1)[1], cards[pid], "", stamp, "S001", sku, category,
                            q, price, f"{float(q) * float(price):.2f}", "销售", order])
    _write_csv(folder / "pos_transactions_pickups.csv",
               ["小票号", "行号", "会员卡号", "手机号", "交易时间", "门店编号", "商品编码", "品类", "数量", "单价", "金额",
                "交易类型", "平台订单号"], pickups, "gbk")


def _write_xlsx(path: Path, header: list[str], rows: list[list]) -> None:
    """An XLSX whose bytes depend only on its content (fixed document and zip timestamps)."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "客户"
    sheet.append(header)
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for item in sorted(source.infolist(), key=lambda i: i.filename):
            data = source.read(item)
            if item.filename == "docProps/core.xml":  # openpyxl stamps the save time here
                data = re.sub(rb"(<dcterms:(?:created|modified)[^>]*>)[^<]*", rb"\g<1>2020-01-01T00:00:00Z", data)
            target.writestr(zipfile.ZipInfo(item.filename, date_time=(2020, 1, 1, 0, 0, 0)), data)


def _write_crm(g: _Gen, out: Path, people: list[Person], truth: list) -> dict:
    """CRM exports for a share of the people: Zoho contacts (CSV) and Fxiaoke customers (XLSX)."""
    zoho, fx = [], []
    for p in people:
        if p.profile == "prospect" or p.planted:
            continue
        if g.rng.random() < 0.12:
            rid = f"zcrm_48768760000{int(p.pid[1:]):08d}"
            truth.append(("zoho_crm", rid, p.pid))
            created = p.registered.strftime("%Y-%m-%d %H:%M:%S")
            zoho.append([rid, g.pick(["Alice Wu", "Bob Li"]), g.pick(["Web", "Store", "Event"]), p.name[1:], p.name[0],
                         _noisy_email(g, p.email) if g.rng.random() < 0.8 else "", p.phone if g.rng.random() < 0.7 else "",
                         p.birth.isoformat(), p.province, p.city, created, created,
                         "true" if g.rng.random() < 0.3 else "false"])
        if g.rng.random() < 0.08:
            cid = f"FX{int(p.pid[1:]):07d}"
            truth.append(("fxiaoke", cid, p.pid))
            created = p.registered.strftime("%Y-%m-%d %H:%M")
            fx.append([cid, p.name, p.phone, p.email if g.rng.random() < 0.5 else "", g.pick(["A", "B", "C"]),
                       p.province, p.city, created, created, g.pick(["张经理", "李主管"])])
    if len(zoho) > 3:
        zoho[1][7] = zoho[1][7][:5] + "02-30"  # a birthday that does not exist
        zoho[2][5] = zoho[2][5].replace("@", " at ")  # a broken email
    if len(fx) > 2:
        fx[1][3] = "no-email-given"  # a broken email
    cases = _zoho_cases(np.random.default_rng(int(g.rng.integers(2**32))), g, [row[0] for row in zoho])
    _write_csv(out / "zoho_crm" / "Cases_export.csv",
               ["Record Id", "Case Number", "Contact Name Id", "Subject", "Case Origin", "Type", "Status",
                "Priority", "Created Time", "Satisfaction"], cases, "utf-8-sig")
    _write_csv(out / "zoho_crm" / "Contacts_export.csv",
               ["Record Id", "Contact Owner", "Lead Source", "First Name", "Last Name", "Email", "Mobile",
                "Date of Birth", "Mailing State", "Mailing City", "Created Time", "Modified Time", "Email Opt Out"],
               zoho, "utf-8-sig")
    _write_xlsx(out / "fxiaoke" / "客户导出.xlsx",
                ["客户编号", "客户名称", "手机", "邮箱", "客户级别", "省份", "城市", "创建时间", "最后修改时间", "负责人"], fx)
    return {"zoho_contacts": len(zoho), "zoho_cases": len(cases), "fxiaoke_customers": len(fx)}


CASE_TYPES = [("Complaint", ["快递太慢", "商品有瑕疵", "客服态度差"]), ("Question", ["会员积分怎么查", "发票怎么开"]),
              ("Feedback", ["希望增加新品", "门店环境很好"]), ("Return", ["尺码不合适要退货", "不想要了申请退货"])]


def _zoho_cases(rng: np.random.Generator, g: _Gen, contact_ids: list[str]) -> list[list]:
    """Service cases of about a quarter of the Zoho contacts in the last 200 days."""
    rows = []
    for contact in contact_ids:
        if rng.random() >= 0.25:
            continue
        for _ in range(int(rng.integers(1, 3))):
            kind, subjects = CASE_TYPES[int(rng.choice(len(CASE_TYPES), p=[0.3, 0.4, 0.15, 0.15]))]
            created = g.end_dt - timedelta(days=float(rng.uniform(0, min(200, g.days))))
            n = len(rows) + 1
            rows.append([f"zcrm_48768760001{n:08d}", f"{n:08d}", contact, subjects[int(rng.integers(len(subjects)))],
                         ["Phone", "Email", "Web", "Chat"][int(rng.integers(4))], kind,
                         ["Closed", "Escalated", "New"][int(rng.integers(3))], ["High", "Medium", "Low"][int(rng.integers(3))],
                         created.strftime("%Y-%m-%d %H:%M:%S"), "" if rng.random() < 0.3 else int(rng.integers(1, 6))])
    return rows
