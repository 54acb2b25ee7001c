"""The floor of each pipeline stage: what DuckDB alone needs for the same work on the same inbox.

Hand-written SQL, one short query per table, no framework, no validation library, no
bookkeeping (no manifest, no quarantine, no history), in one DuckDB file.  ``floors(inbox,
as_of, scratch)`` returns ``{stage: seconds}`` for the stages of the nightly flow:

- land: every export into Parquet (JSON Lines and CSV read by DuckDB; GBK decoded by Python
  first, DuckDB cannot; the XLSX read with python-calamine);
- validate: per table one query counting the rows that break the same kinds of rule (a key
  or time missing or unparsable, a negative or non-numeric amount, a future time, a key twice);
- stage: the newest row per key, times parsed, amounts cast;
- resolve_identities: links on member id, email and phone + name across web users, store
  members and marketplace buyers (the CRM contacts are landed, not linked), then connected
  components by min-label propagation;
- features: recency, frequency, monetary, first and last order, active days per customer;
- tags: five tags (activity, lifecycle, RFM segment, value tier, churn risk) as CASE
  expressions over the floor's features (simplified: no BG/NBD, fewer RFM cases);
- core_checks: keys unique and not null, orders linked;
- publish: the customer, order and tag tables copied into a new database file, tags to Parquet.
"""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from python_calamine import CalamineWorkbook

TIMESTAMP_FORMATS = {"store": "%Y/%m/%d %H:%M", "marketplace": "%Y-%m-%d %H:%M:%S"}


def _land(con: duckdb.DuckDBPyConnection, inbox: Path, lake: Path) -> None:
    lake.mkdir(parents=True, exist_ok=True)
    for path in sorted(inbox.glob("*/*")):
        out = lake / f"{path.parent.name}__{path.stem}.parquet"
        if path.suffix == ".jsonl":
            source = f"read_json('{path}', format = 'newline_delimited')"
        elif path.suffix == ".xlsx":
            rows = CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0).to_python()
            table = pa.table({str(h): pa.array([None if r[i] in (None, "") else str(r[i]) for r in rows[1:]], pa.string())
                              for i, h in enumerate(rows[0])})
            pq.write_table(table, out)
            continue
        elif path.suffix == ".csv" and path.parent.name == "store":
            utf8 = lake / f"{path.stem}.utf8.csv"
            utf8.write_text(path.read_bytes().decode("gbk"), encoding="utf-8")
            source = f"read_csv('{utf8}', all_varchar = true)"
        elif path.suffix == ".csv":
            source = f"read_csv('{path}', all_varchar = true)"
        else:
            continue
        con.execute(f"COPY (SELECT * FROM {source}) TO '{out}' (FORMAT parquet)")


def _views(con: duckdb.DuckDBPyConnection, lake: Path) -> None:
    def files(pattern: str) -> str:
        found = sorted(lake.glob(pattern))
        return "[" + ", ".join(f"'{p}'" for p in found) + "]"

    con.execute(f"""
        CREATE OR REPLACE VIEW web_users AS SELECT * FROM read_parquet({files('web__users*.parquet')}, union_by_name = true);
        CREATE OR REPLACE VIEW web_orders AS SELECT * FROM read_parquet({files('web__orders*.parquet')}, union_by_name = true);
        CREATE OR REPLACE VIEW web_events AS SELECT * FROM read_parquet({files('web__events*.parquet')}, union_by_name = true);
        CREATE OR REPLACE VIEW store_members AS SELECT * FROM read_parquet({files('store__members*.parquet')}, union_by_name = true);
        CREATE OR REPLACE VIEW store_pos AS SELECT * FROM read_parquet({files('store__pos_transactions*.parquet')}, union_by_name = true);
        CREATE OR REPLACE VIEW market AS SELECT * FROM read_parquet({files('marketplace__orders_*.parquet')}, union_by_name = true, filename = true);
        """)


def _validate(con: duckdb.DuckDBPyConnection, as_of: date) -> None:
    future = f"TIMESTAMP '{as_of.isoformat()} 23:59:59' + INTERVAL 1 DAY"
    con.execute("""
        SELECT count(*) FILTER (WHERE user_id IS NULL), count(*) FILTER (WHERE try_cast(birthday AS DATE) IS NULL),
               count(*) - count(DISTINCT user_id) FROM web_users""").fetchall()
    con.execute(f"""
        SELECT count(*) FILTER (WHERE order_id IS NULL OR total < 0 OR created_at > {future}),
               count(*) - count(DISTINCT order_id) FROM web_orders""").fetchall()
    con.execute(f"""SELECT count(*) FILTER (WHERE event_id IS NULL OR ts IS NULL OR ts > {future}),
                           count(*) - count(DISTINCT event_id) FROM web_events""").fetchall()
    con.execute("""SELECT count(*) FILTER (WHERE 会员卡号 IS NULL OR try_strptime(生日, '%Y/%m/%d') IS NULL),
                          count(*) - count(DISTINCT 会员卡号) FROM store_members""").fetchall()
    con.execute(f"""SELECT count(*) FILTER (WHERE 小票号 IS NULL OR try_cast(金额 AS DECIMAL(18, 2)) IS NULL
                                           OR try_strptime(交易时间, '{TIMESTAMP_FORMATS['store']}') IS NULL
                                           OR try_strptime(交易时间, '{TIMESTAMP_FORMATS['store']}') > {future}),
                          count(*) - count(DISTINCT (小票号, 行号)) FROM store_pos""").fetchall()
    con.execute(f"""SELECT count(*) FILTER (WHERE 订单编号 IS NULL OR try_cast(实付金额 AS DECIMAL(18, 2)) IS NULL
                                           OR try_strptime(下单时间, '{TIMESTAMP_FORMATS['marketplace']}') IS NULL),
                          count(*) - count(DISTINCT (filename, 子订单编号)) FROM market""").fetchall()


def _stage(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"""
        CREATE OR REPLACE TABLE customers_raw AS
        SELECT 'web' AS source, user_id AS id, lower(trim(email)) AS email, regexp_replace(mobile, '[^0-9]', '', 'g') AS phone,
               real_name AS name, member_card AS member_id, try_cast(birthday AS DATE) AS birth_date, city
        FROM web_users QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY updated_at DESC) = 1
        UNION ALL
        SELECT 'store', 会员卡号, NULL, right(regexp_replace(手机号, '[^0-9]', '', 'g'), 11), 姓名, 会员卡号,
               CAST(try_strptime(生日, '%Y/%m/%d') AS DATE), 城市
        FROM store_members QUALIFY row_number() OVER (PARTITION BY 会员卡号 ORDER BY 入会时间 DESC) = 1
        UNION ALL
        SELECT 'marketplace', 买家昵称, NULL, NULL, any_value(收货人), NULL, NULL, any_value(收货城市)
        FROM market GROUP BY 买家昵称;
        CREATE OR REPLACE TABLE orders AS
        SELECT 'web' AS source, order_id, user_id AS id, CAST(created_at AS TIMESTAMP) AS ordered_at,
               CAST(total AS DECIMAL(18, 2)) AS amount, status
        FROM web_orders QUALIFY row_number() OVER (PARTITION BY order_id ORDER BY created_at DESC) = 1
        UNION ALL
        SELECT 'store', 小票号, any_value(会员卡号), min(try_strptime(交易时间, '{TIMESTAMP_FORMATS['store']}')),
               sum(try_cast(金额 AS DECIMAL(18, 2))), CASE WHEN bool_or(交易类型 = '退货') THEN 'refunded' ELSE 'paid' END
        FROM store_pos GROUP BY 小票号
        UNION ALL
        SELECT 'marketplace', 订单编号, any_value(买家昵称), min(try_strptime(下单时间, '{TIMESTAMP_FORMATS['marketplace']}')),
               any_value(try_cast(实付金额 AS DECIMAL(18, 2))),
               CASE WHEN arg_max(订单状态, filename) = '交易成功' THEN 'paid' ELSE 'refunded' END
        FROM market GROUP BY 订单编号;
        CREATE OR REPLACE TABLE events AS
        SELECT event_id, user_id AS id, CAST(ts AS TIMESTAMP) AS occurred_at FROM web_events
        QUALIFY row_number() OVER (PARTITION BY event_id) = 1""")


def _identity(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("""
        CREATE OR REPLACE TABLE nodes AS
        SELECT row_number() OVER (ORDER BY source, id) AS node, * FROM customers_raw;
        CREATE OR REPLACE TABLE edges AS
        WITH keys AS (
            SELECT node, 'm' || member_id AS k FROM nodes WHERE member_id IS NOT NULL
            UNION ALL SELECT node, 'e' || email FROM nodes WHERE email IS NOT NULL
            UNION ALL SELECT node, 'p' || phone || name FROM nodes WHERE phone IS NOT NULL AND name IS NOT NULL),
        anchors AS (SELECT k, min(node) AS anchor FROM keys GROUP BY k HAVING count(*) BETWEEN 2 AND 8)
        SELECT keys.node AS a, anchor AS b FROM keys JOIN anchors USING (k) WHERE keys.node <> anchor;
        INSERT INTO edges SELECT b, a FROM edges;
        CREATE OR REPLACE TABLE labels AS SELECT node, node AS label FROM nodes""")
    while True:
        con.execute("""
            CREATE OR REPLACE TABLE next_labels AS
            SELECT l.node, least(l.label, coalesce(min(n.label), l.label)) AS label
            FROM labels l LEFT JOIN edges e ON e.a = l.node LEFT JOIN labels n ON n.node = e.b GROUP BY l.node, l.label""")
        changed = con.execute("SELECT count(*) FROM next_labels JOIN labels USING (node) WHERE next_labels.label <> labels.label").fetchall()[0][0]
        con.execute("CREATE OR REPLACE TABLE labels AS SELECT * FROM next_labels")
        if not changed:
            break
    con.execute("""CREATE OR REPLACE TABLE customer_map AS
                   SELECT n.source, n.id, 'C' || l.label AS customer_id FROM nodes n JOIN labels l USING (node)""")


def _features(con: duckdb.DuckDBPyConnection, as_of: date) -> None:
    day = f"DATE '{as_of.isoformat()}'"
    con.execute(f"""
        CREATE OR REPLACE TABLE features AS
        WITH o AS (SELECT m.customer_id, CAST(o.ordered_at AS DATE) AS d, o.amount
                   FROM orders o JOIN customer_map m ON m.source = o.source AND m.id = o.id
                   WHERE o.status = 'paid' AND CAST(o.ordered_at AS DATE) <= {day}),
        a AS (SELECT m.customer_id, count(DISTINCT CAST(e.occurred_at AS DATE)) AS active_days_30
              FROM events e JOIN customer_map m ON m.source = 'web' AND m.id = e.id
              WHERE CAST(e.occurred_at AS DATE) > {day} - 30 AND CAST(e.occurred_at AS DATE) <= {day} GROUP BY 1),
        f AS (SELECT customer_id, {day} - max(d) AS days_since_last_order, {day} - min(d) AS days_since_first_order,
                     count(*) AS paid_orders, sum(amount) AS monetary FROM o GROUP BY 1)
        SELECT c.customer_id, f.days_since_last_order, f.days_since_first_order, coalesce(f.paid_orders, 0) AS paid_orders,
               f.monetary, coalesce(a.active_days_30, 0) AS active_days_30,
               ntile(5) OVER (ORDER BY f.days_since_last_order DESC) AS r_score,
               ntile(5) OVER (ORDER BY f.paid_orders) AS f_score, ntile(5) OVER (ORDER BY f.monetary) AS m_score
        FROM (SELECT DISTINCT customer_id FROM customer_map) c
        LEFT JOIN f USING (customer_id) LEFT JOIN a USING (customer_id)""")


def _tags(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("""
        CREATE OR REPLACE TABLE tags AS
        SELECT customer_id, 'activity_level' AS tag,
               CASE WHEN active_days_30 >= 15 THEN 'high' WHEN active_days_30 >= 4 THEN 'medium'
                    WHEN active_days_30 >= 1 THEN 'low' ELSE 'inactive' END AS value FROM features
        UNION ALL
        SELECT customer_id, 'lifecycle_stage',
               CASE WHEN paid_orders = 0 THEN 'prospect' WHEN days_since_first_order < 30 THEN 'new'
                    WHEN days_since_last_order > 180 THEN 'churned' ELSE 'active' END FROM features
        UNION ALL
        SELECT customer_id, 'rfm_segment',
               CASE WHEN r_score = 5 AND f_score >= 4 THEN 'Champions' WHEN r_score = 5 AND f_score = 1 THEN 'New Customers'
                    WHEN r_score >= 4 AND f_score BETWEEN 2 AND 3 THEN 'Potential Loyalist'
                    WHEN r_score <= 2 AND f_score >= 3 THEN 'At Risk' WHEN r_score = 1 AND f_score = 1 THEN 'Lost'
                    ELSE 'Hibernating' END FROM features WHERE paid_orders > 0
        UNION ALL
        SELECT customer_id, 'value_tier', CASE WHEN m_score = 5 THEN 'high-value' WHEN m_score >= 3 THEN 'potential'
                                               ELSE 'standard' END FROM features WHERE paid_orders > 0
        UNION ALL
        SELECT customer_id, 'churn_risk', CASE WHEN days_since_last_order > 180 THEN 'high'
                                               WHEN days_since_last_order > 90 THEN 'medium' ELSE 'low' END
        FROM features WHERE paid_orders > 0""")


def _core_checks(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("""SELECT count(*) - count(DISTINCT customer_id), count(*) FILTER (WHERE customer_id IS NULL)
                   FROM features""").fetchall()
    con.execute("""SELECT count(*) FILTER (WHERE m.customer_id IS NULL AND o.id IS NOT NULL)
                   FROM orders o LEFT JOIN customer_map m ON m.source = o.source AND m.id = o.id""").fetchall()
    con.execute("SELECT count(*) - count(DISTINCT (customer_id, tag)) FROM tags").fetchall()


def _publish(con: duckdb.DuckDBPyConnection, scratch: Path) -> None:
    target = scratch / "published.duckdb"
    target.unlink(missing_ok=True)
    con.execute(f"ATTACH '{target}' AS published")
    con.execute("""CREATE TABLE published.customers AS SELECT * FROM features;
                   CREATE TABLE published.orders AS SELECT o.*, m.customer_id FROM orders o
                       LEFT JOIN customer_map m ON m.source = o.source AND m.id = o.id;
                   CREATE TABLE published.customer_tags AS SELECT * FROM tags ORDER BY customer_id, tag""")
    con.execute("DETACH published")
    con.execute(f"COPY (SELECT * FROM tags) TO '{scratch / 'customer_tags.parquet'}' (FORMAT parquet)")


def floors(inbox: Path, as_of: date, scratch: Path, memory_limit: str = "4GB") -> dict[str, float]:
    """Seconds per stage of the hand-written DuckDB version on ``inbox`` (work files in ``scratch``)."""
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "floor.duckdb").unlink(missing_ok=True)
    con = duckdb.connect(str(scratch / "floor.duckdb"))
    con.execute(f"SET memory_limit = '{memory_limit}'")
    steps = [
        ("land", lambda: _land(con, inbox, scratch / "lake")),
        ("validate", lambda: (_views(con, scratch / "lake"), _validate(con, as_of))),
        ("stage", lambda: _stage(con)),
        ("resolve_identities", lambda: _identity(con)),
        ("features", lambda: _features(con, as_of)),
        ("tags", lambda: _tags(con)),
        ("core_checks", lambda: _core_checks(con)),
        ("publish", lambda: _publish(con, scratch)),
    ]
    seconds = {}
    for name, step in steps:
        started = time.perf_counter()
        step()
        seconds[name] = round(time.perf_counter() - started, 3)
    con.close()
    return seconds
