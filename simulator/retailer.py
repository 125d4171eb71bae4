"""A synthetic omnichannel retailer with planted return fraud and abuse, written in the data contract.

Nobody publishes labelled returns-fraud data, so this simulator produces the history a mid-size
fashion-and-general-merchandise retailer would export, with the ground truth kept apart in `_truth/`
(read only by tests and benchmarks, never by pipelines or the API).

What it aims at (published figures):
- NRF & Appriss Retail, "Consumer Returns in the Retail Industry" 2023: 14.5 % of sales returned,
  online 17.6 %; 13.7 % of returns fraudulent or abusive. The 2024 edition: 16.9 % of sales returned,
  15.14 % of returns fraud/abuse ("about a seventh of returned value"). Defaults here land at a 12-17 %
  return rate by value overall (online ~20-25 %, in store ~5-8 %) and fraud plus abuse at 7-12 % of
  returns; both are configurable and asserted by tests within 10-20 % and 5-15 %.
- Apparel and shoes return most (size and fit: ~30-40 % of online apparel returns are "doesn't fit"),
  electronics least but with the highest value; January is the returns wave after the holiday peak.
- Fraud/abuse typologies (Appriss, NRF, Signifyd): wardrobing (worn and returned, often just inside the
  window), serial policy abuse, receiptless returns of stolen merchandise across several stores, item
  switching and empty boxes (seen at inspection), employee sweethearting with accomplices, and rings
  of accounts sharing cards, devices or addresses.

Labels are partial as at a real retailer: only returns flagged by simple legacy rules (plus a ~1.5 %
random audit and later chargebacks) are reviewed, days later, with some analyst error. Inspection
reveals the condition; a mostly static disposition policy (with some exploration) picks the outlet and
the realised net recovery value is recorded; `_truth/return_line_values.csv` holds the value of every
feasible outlet so routing can be scored against the oracle.

Everything is vectorised with numpy and deterministic for a seed.
"""

from __future__ import annotations

import calendar
import datetime as dt
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from oms import enums

# --- configuration --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Category:
    name: str
    weight: float  # share of styles
    price: tuple[float, float]  # 5th and 95th percentile of list prices
    cost: float  # unit cost / list price
    window: int  # return window in days
    sizes: tuple[str, ...] = ()
    fit: float = 0.0  # per-line probability of "doesn't fit" in store
    defect: float = 0.01
    changed_mind: float = 0.02
    not_as_described: float = 0.0  # online only
    sell_through: float = 0.75  # share of list price a restocked unit realises
    refurb: float = 0.12  # refurbishment cost as a share of price
    returnable: bool = True


CATEGORIES: tuple[Category, ...] = (
    Category(
        "apparel",
        0.28,
        (12, 90),
        0.38,
        30,
        ("XS", "S", "M", "L", "XL"),
        0.030,
        0.006,
        0.022,
        0.012,
        0.70,
        0.08,
    ),
    Category(
        "shoes",
        0.12,
        (30, 160),
        0.42,
        30,
        ("5", "6", "7", "8", "9", "10", "11"),
        0.030,
        0.008,
        0.016,
        0.010,
        0.72,
        0.10,
    ),
    Category("electronics", 0.10, (20, 700), 0.70, 14, (), 0.0, 0.018, 0.014, 0.010, 0.85, 0.16),
    Category("home", 0.16, (8, 160), 0.45, 30, (), 0.0, 0.009, 0.012, 0.010, 0.80, 0.12),
    Category("beauty", 0.10, (5, 60), 0.35, 30, (), 0.0, 0.005, 0.006, 0.004, 0.60, 0.30),
    Category("toys", 0.08, (6, 90), 0.45, 30, (), 0.0, 0.010, 0.010, 0.006, 0.75, 0.15),
    Category("sports", 0.07, (12, 220), 0.50, 30, ("S", "M", "L"), 0.012, 0.010, 0.012, 0.008, 0.75, 0.12),
    Category("accessories", 0.07, (8, 120), 0.35, 30, (), 0.0, 0.006, 0.014, 0.008, 0.70, 0.10),
    Category("gift_cards", 0.02, (25, 100), 1.00, 0, (), 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, returnable=False),
)
CATEGORY_NAMES = tuple(c.name for c in CATEGORIES)

SEGMENTS = (
    "ordinary",
    "bracketer",  # legitimately buys several sizes, keeps one
    "big_spender",  # loyal, buys and returns a lot, legitimately
    "wardrober",  # abuse: wears and returns just inside the window
    "serial_returner",  # abuse: returns most of what it buys
    "switcher",  # fraud: returns empty boxes or other items
    "ring",  # fraud: accounts sharing cards, devices, addresses
    "accomplice",  # fraud: refunds through a sweethearting employee
)
# the data contract's fraud types (what an analyst records), less "other"; codes are positions here
TYPOLOGIES = ("none", *(kind for kind in enums.FRAUD_TYPES if kind != "other"))
TYPOLOGY_LABEL = {
    "none": "legitimate",
    "wardrobing": "abuse",
    "serial_abuse": "abuse",
    "receiptless_stolen": "fraud",
    "empty_box": "fraud",
    "item_switching": "fraud",
    "sweethearting": "fraud",
    "ring": "fraud",
}
REGIONS = ("north", "south", "east", "west", "central")
STATIC_ROUTING = {
    "new": "restock",
    "open_box": "open_box",
    "used": "liquidate",
    "damaged": "liquidate",
    "defective": "return_to_vendor",
    "wrong_item": "liquidate",
    "empty_box": "recycle",
}


@dataclass(frozen=True)
class SimulationConfig:
    customers: int = 5_000
    months: int = 12
    seed: int = 42
    start: dt.date = dt.date(2024, 1, 1)
    orders_per_customer_month: float = 0.32
    segment_shares: dict[str, float] = field(
        default_factory=lambda: {
            "bracketer": 0.05,
            "big_spender": 0.04,
            "wardrober": 0.018,
            "serial_returner": 0.009,
            "switcher": 0.006,
            "ring": 0.008,
        }
    )
    receiptless_fraudsters_per_1000: float = 1.2
    sweetheart_share: float = 0.03  # of store employees
    return_rate_scale: float = 1.0
    audit_rate: float = 0.015
    review_share_of_flags: float = 0.75
    exploration: float = 0.2  # share of dispositions not following the static routing
    # labels as a retailer has them: how many reviewed returns it knows at the end of the history (None:
    # `review_share_of_flags` of the rule-flagged returns plus `audit_rate` of the others), the share of
    # them that is the random audit, and how late decisions arrive (reviews and chargebacks decided in
    # the last `label_delay_days` are not known yet)
    review_budget: int | None = None
    audit_share: float = 0.2
    label_delay_days: int = 0
    # how often each fraudulent segment acts (per eligible line bought), and how switchers' returns split
    wardrobe_rate: float = 0.5
    switch_rate: float = 0.6
    ring_rate: float = 0.65
    empty_box_share: float = 0.5

    def with_typologies(self, seed: int) -> SimulationConfig:
        """The same retailer with a fraud mix drawn from `seed`: how many customers of each fraudulent
        segment (x0.3 to x3), how many receiptless thieves and sweethearting employees, and how often each
        acts, so that a model is judged on mixes it was not tuned to."""
        rng = np.random.default_rng([seed, 7919])
        spread = lambda: float(np.exp(rng.uniform(np.log(0.3), np.log(3.0))))  # noqa: E731
        fraudulent = ("wardrober", "serial_returner", "switcher", "ring")
        shares = {k: v * spread() if k in fraudulent else v for k, v in self.segment_shares.items()}
        return replace(
            self,
            segment_shares=shares,
            receiptless_fraudsters_per_1000=self.receiptless_fraudsters_per_1000 * spread(),
            sweetheart_share=min(self.sweetheart_share * spread(), 0.2),
            wardrobe_rate=float(rng.uniform(0.2, 0.8)),
            switch_rate=float(rng.uniform(0.3, 0.9)),
            ring_rate=float(rng.uniform(0.35, 0.9)),
            empty_box_share=float(rng.uniform(0.2, 0.8)),
        )

    @property
    def end(self) -> dt.date:
        """`months` after `start`, on the same day of the month or the month's last (31 May + 1 month
        is 30 June)."""
        year, month = divmod(self.start.month - 1 + self.months, 12)
        year, month = self.start.year + year, month + 1
        return dt.date(year, month, min(self.start.day, calendar.monthrange(year, month)[1]))


@dataclass
class SimulationResult:
    directory: Path
    tables: dict[str, int]
    seconds: float
    figures: dict[str, float]


# --- helpers ----------------------------------------------------------------------------------------

DAY = np.timedelta64(1, "D")
SECOND = np.timedelta64(1, "s")


def _ids(prefix: str, n: int, width: int) -> np.ndarray:
    return np.char.add(prefix, np.char.zfill(np.arange(1, n + 1).astype(str), width)).astype(object)


def _iso(moments: np.ndarray) -> np.ndarray:
    """datetime64 -> 'YYYY-MM-DDTHH:MM:SSZ' (None for NaT)."""
    text = np.char.add(np.datetime_as_string(moments.astype("datetime64[s]"), unit="s"), "Z").astype(object)
    text[np.isnat(moments)] = None
    return text


def _money(cents: np.ndarray) -> np.ndarray:
    """Integer cents -> '12.34' (None where the float input is NaN)."""
    values = np.asarray(cents, dtype="float64")
    present = ~np.isnan(values)
    whole = np.where(present, values, 0).astype(np.int64)
    sign = np.where(whole < 0, "-", "")
    absolute = np.abs(whole)
    text = np.char.add(
        np.char.add(np.char.add(sign, (absolute // 100).astype(str)), "."),
        np.char.zfill((absolute % 100).astype(str), 2),
    ).astype(object)
    text[~present] = None
    return text


def _pick(rng: np.random.Generator, probabilities: np.ndarray) -> np.ndarray:
    """Row-wise categorical draw: index of the chosen column for each row of a probability matrix."""
    cumulative = np.cumsum(probabilities, axis=1)
    cumulative /= cumulative[:, -1:]
    return (rng.random((len(probabilities), 1)) > cumulative).sum(axis=1)


def _write(directory: Path, name: str, frame: pd.DataFrame) -> int:
    columns = {}
    for column in frame.columns:
        values = frame[column].to_numpy()
        if values.dtype == object or values.dtype.kind in "US":
            columns[column] = pa.array(values, type=pa.string(), from_pandas=True)
        else:
            columns[column] = pa.array(values, from_pandas=True)
    table = pa.table(columns)
    options = pa_csv.WriteOptions(quoting_style="needed")
    pa_csv.write_csv(table, directory / f"{name}.csv", write_options=options)
    return len(frame)


# --- the simulation -------------------------------------------------------------------------------


class _Retailer:
    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        self.rng = np.random.default_rng(config.seed)
        self.start = np.datetime64(config.start.isoformat(), "s")
        self.end = np.datetime64(config.end.isoformat(), "s")
        self.days = int((self.end - self.start) / DAY)

    # catalogue ------------------------------------------------------------------------------------

    def catalogue(self) -> None:
        rng = self.rng
        n_styles = int(np.clip(self.config.customers / 12, 120, 4000))
        weights = np.array([c.weight for c in CATEGORIES])
        category = rng.choice(len(CATEGORIES), n_styles, p=weights / weights.sum())
        category[: len(CATEGORIES)] = np.arange(len(CATEGORIES))  # every category exists
        lo = np.array([c.price[0] for c in CATEGORIES])[category]
        hi = np.array([c.price[1] for c in CATEGORIES])[category]
        mu, sigma = (np.log(lo) + np.log(hi)) / 2, (np.log(hi) - np.log(lo)) / 3.29
        price = np.exp(rng.normal(mu, sigma))
        price = np.clip(np.round(price) - 0.01, 1.99, None)  # 19.99-style prices
        gift = category == CATEGORY_NAMES.index("gift_cards")
        price[gift] = rng.choice([25.0, 50.0, 100.0], gift.sum())
        brands = np.array([f"Brand{i:02d}" for i in range(1, 31)], dtype=object)
        brand = rng.integers(0, len(brands), n_styles)
        # vendors take defective goods back at very different rates: learnable routing signal
        brand_rtv = rng.choice([0.0, 0.4, 0.9], len(brands), p=[0.35, 0.35, 0.3])
        quality = np.exp(rng.normal(-0.15, 0.5, n_styles))
        lemons = rng.random(n_styles) < 0.05
        quality[lemons] *= 5
        described = np.exp(rng.normal(-0.1, 0.5, n_styles))
        described[rng.random(n_styles) < 0.04] *= 5
        sized = np.array([len(CATEGORIES[c].sizes) > 0 for c in category])
        fit_bias = np.where(sized, rng.choice([-1, 0, 1], n_styles, p=[0.15, 0.8, 0.05]), 0)
        n_colors = rng.integers(1, 4, n_styles)
        colors = np.array(["black", "white", "navy", "red", "green", "grey", "beige"], dtype=object)
        popularity = rng.pareto(1.2, n_styles) + 0.05
        self.styles = pd.DataFrame(
            {
                "style_id": _ids("ST", n_styles, 5),
                "category": category,
                "brand": brands[brand],
                "brand_rtv": brand_rtv[brand],
                "price_cents": np.round(price * 100).astype(np.int64),
                "quality": quality,
                "described": described,
                "fit_bias": fit_bias,
                "n_colors": n_colors,
                "popularity": popularity,
            }
        )
        # SKUs: style x size x colour
        n_sizes = np.array([max(len(CATEGORIES[c].sizes), 1) for c in category])
        per_style = n_sizes * n_colors
        style_of_sku = np.repeat(np.arange(n_styles), per_style)
        within = np.arange(len(style_of_sku)) - np.repeat(np.cumsum(per_style) - per_style, per_style)
        size_idx = within // np.repeat(n_colors, per_style)
        color_idx = within % np.repeat(n_colors, per_style)
        size_label = np.array(
            [
                CATEGORIES[c].sizes[s] if CATEGORIES[c].sizes else ""
                for c, s in zip(category[style_of_sku], size_idx, strict=True)
            ],
            dtype=object,
        )
        color_label = colors[(color_idx + style_of_sku) % len(colors)]
        sku = np.char.add(
            np.char.add(self.styles["style_id"].to_numpy()[style_of_sku].astype(str), "-"),
            np.char.add(
                np.where(size_label == "", "OS", size_label).astype(str),
                np.char.add("-", color_label.astype(str)),
            ),
        ).astype(object)
        self.style_first_sku = np.cumsum(per_style) - per_style
        cats = np.array(CATEGORY_NAMES, dtype=object)
        price_cents = self.styles["price_cents"].to_numpy()[style_of_sku]
        cost_ratio = np.array([c.cost for c in CATEGORIES])[category[style_of_sku]]
        self.skus = pd.DataFrame(
            {
                "sku": sku,
                "style": style_of_sku,
                "size_idx": size_idx,
                "color_idx": color_idx,
                "price_cents": price_cents,
                "cost_cents": np.round(price_cents * cost_ratio * rng.uniform(0.85, 1.15, len(sku))).astype(
                    np.int64
                ),
            }
        )
        self.products = pd.DataFrame(
            {
                "sku": sku,
                "style_id": self.styles["style_id"].to_numpy()[style_of_sku],
                "category": cats[category[style_of_sku]],
                "department": np.where(
                    np.isin(category[style_of_sku], [0, 1, 7]), "fashion", "general"
                ).astype(object),
                "brand": self.styles["brand"].to_numpy()[style_of_sku],
                "size": np.where(size_label == "", None, size_label),
                "color": color_label,
                "list_price": _money(price_cents),
                "unit_cost": _money(self.skus["cost_cents"].to_numpy()),
                "return_window_days": np.array([c.window for c in CATEGORIES])[category[style_of_sku]],
                "returnable": np.where(
                    np.array([c.returnable for c in CATEGORIES])[category[style_of_sku]], "true", "false"
                ).astype(object),
            }
        )

    # locations and people -------------------------------------------------------------------------

    def locations(self) -> None:
        rng = self.rng
        n_stores = int(np.clip(self.config.customers / 2500, 4, 60))
        store_region = np.array(REGIONS, dtype=object)[np.arange(n_stores) % len(REGIONS)]
        store_ids = _ids("S", n_stores, 3)
        self.store_ids, self.store_region = store_ids, store_region
        self.locations_frame = pd.DataFrame(
            {
                "location_id": np.concatenate([store_ids, ["W01", "DC1", "RC1"]]).astype(object),
                "kind": np.array(["store"] * n_stores + ["warehouse", "dc", "returns_center"], dtype=object),
                "region": np.concatenate([store_region, ["central", "north", "central"]]).astype(object),
                "name": np.concatenate(
                    [
                        np.char.add("Store ", store_ids.astype(str)),
                        ["Main warehouse", "Northern DC", "Returns centre"],
                    ]
                ).astype(object),
            }
        )
        staff = rng.integers(6, 16, n_stores)
        self.employee_store = np.repeat(np.arange(n_stores), staff)
        self.employee_ids = np.char.add(
            np.char.add("E", store_ids[self.employee_store].astype(str)),
            np.char.add(
                "-",
                np.char.zfill(
                    (
                        np.arange(len(self.employee_store)) - np.repeat(np.cumsum(staff) - staff, staff) + 1
                    ).astype(str),
                    2,
                ),
            ),
        ).astype(object)
        self.store_staff_start = np.cumsum(staff) - staff
        self.store_staff = staff
        n_sweet = max(1, round(len(self.employee_ids) * self.config.sweetheart_share))
        self.sweethearts = np.sort(rng.choice(len(self.employee_ids), n_sweet, replace=False))

    def customers(self) -> None:
        rng, config = self.rng, self.config
        n = config.customers
        shares = dict(config.segment_shares)
        accomplices = min(len(self.sweethearts) * 3, max(n // 50, 1))
        probs = np.array([0.0] + [shares.get(s, 0.0) for s in SEGMENTS[1:]])
        probs[0] = 1 - probs.sum()
        segment = rng.choice(len(SEGMENTS), n, p=probs)
        # accomplices: customers living near a sweetheart's store
        acc = rng.choice(np.flatnonzero(segment == 0), accomplices, replace=False)
        segment[acc] = SEGMENTS.index("accomplice")
        self.accomplice_of = np.full(n, -1)
        self.accomplice_of[acc] = self.sweethearts[np.arange(accomplices) % len(self.sweethearts)]
        fraudish = np.isin(segment, [SEGMENTS.index(s) for s in ("switcher", "ring", "accomplice")])
        tenure = rng.exponential(500, n)
        joins_during = rng.random(n) < np.where(fraudish, 0.6, 0.25)
        created = np.where(
            joins_during,
            self.start + (rng.random(n) * self.days * 0.8 * 86400).astype("timedelta64[s]"),
            self.start - (tenure * 86400).astype("timedelta64[s]"),
        )
        home_store = rng.integers(0, len(self.store_ids), n)
        home_store[acc] = self.employee_store[self.accomplice_of[acc]]
        region = self.store_region[home_store]
        # channel preference: web, app, store, marketplace
        pref = rng.dirichlet([2.2, 1.0, 2.4, 0.3], n)
        online_segments = np.isin(segment, [SEGMENTS.index(s) for s in ("bracketer", "switcher", "ring")])
        pref[online_segments] = rng.dirichlet([4, 2, 0.6, 0.2], online_segments.sum())
        store_segments = segment == SEGMENTS.index("accomplice")
        pref[store_segments] = rng.dirichlet([0.5, 0.3, 5, 0.1], store_segments.sum())
        rate = config.orders_per_customer_month * np.exp(rng.normal(-0.2, 0.6, n))
        rate[segment == SEGMENTS.index("big_spender")] *= 4
        rate[segment == SEGMENTS.index("bracketer")] *= 1.6
        rate[segment == SEGMENTS.index("serial_returner")] *= 2
        propensity = np.exp(rng.normal(0, 0.45, n))
        propensity[segment == SEGMENTS.index("big_spender")] *= 2.0
        # sizes: each customer has a true size index per size run (middle-heavy)
        true_size = np.clip(np.round(rng.normal(0.5, 0.2, n) * 6), 0, 6).astype(int)
        device = _ids("D", n, 7)
        card = _ids("fp", n, 7)
        # full UK-style postcodes ("LS12 3AB"): a handful of households each, so shared ones mean something
        letters = np.array(list("ABDEFGHJLNPQRSTUWXYZ"))
        postcode = np.char.add(
            np.char.add(
                np.array(["LS", "M", "B", "BS", "NE", "CF", "G", "EH"])[rng.integers(0, 8, n)],
                rng.integers(1, 30, n).astype(str),
            ),
            np.char.add(
                np.char.add(" ", rng.integers(1, 10, n).astype(str)),
                np.char.add(letters[rng.integers(0, 20, n)], letters[rng.integers(0, 20, n)]),
            ),
        ).astype(object)
        # rings: groups of 3-8 accounts sharing a card, a device and/or a delivery address
        ring_members = np.flatnonzero(segment == SEGMENTS.index("ring"))
        self.ring_id = np.full(n, -1)
        position, ring = 0, 0
        while position < len(ring_members):
            size = int(rng.integers(3, 9))
            members = ring_members[position : position + size]
            self.ring_id[members] = ring
            shared = rng.random(3) < np.array([0.7, 0.6, 0.6])
            if not shared.any():
                shared[0] = True
            if shared[0]:
                card[members] = card[members[0]]
            if shared[1]:
                device[members] = device[members[0]]
            if shared[2]:
                postcode[members] = postcode[members[0]]
            position += size
            ring += 1
        second_card = np.where(rng.random(n) < 0.3, np.char.add(card.astype(str), "b").astype(object), card)
        self.cust = pd.DataFrame(
            {
                "customer_id": _ids("C", n, 7),
                "segment": segment,
                "created": created,
                "home_store": home_store,
                "region": region,
                "rate": rate,
                "propensity": propensity,
                "true_size": true_size,
                "device": device,
                "card": card,
                "card2": second_card,
                "postcode": postcode,
            }
        )
        self.pref = pref

    # orders ----------------------------------------------------------------------------------------

    def _season(self) -> np.ndarray:
        """Relative order intensity per day of the horizon: holiday peak, January lull, weekends."""
        days = self.start.astype("datetime64[D]") + np.arange(self.days)
        month = days.astype("datetime64[M]").astype(int) % 12 + 1
        day_of_month = (days - days.astype("datetime64[M]")).astype(int) + 1
        weekday = (days.astype(int) + 3) % 7  # 0 = Monday
        intensity = np.ones(self.days)
        intensity[month == 11] = 1.35
        intensity[(month == 12) & (day_of_month <= 22)] = 1.7
        intensity[(month == 12) & (day_of_month > 26)] = 1.2
        intensity[month == 1] = 0.85
        intensity[month == 7] = 1.1
        intensity *= np.where(weekday >= 5, 1.15, 1.0)
        return intensity

    def orders(self) -> None:
        rng, cust = self.rng, self.cust
        n_cust = len(cust)
        intensity = self._season()
        cumulative = np.concatenate([[0], np.cumsum(intensity)])
        active_from = np.clip(
            ((cust["created"].to_numpy() - self.start) / DAY).astype(float), 0, self.days - 1
        )
        expected = cust["rate"].to_numpy() * (self.days - active_from) / 30.44
        counts = rng.poisson(expected)
        order_cust = np.repeat(np.arange(n_cust), counts)
        n = len(order_cust)
        lo = np.interp(active_from[order_cust], np.arange(self.days + 1), cumulative)
        u = lo + rng.random(n) * (cumulative[-1] - lo)
        day = np.clip(np.searchsorted(cumulative, u) - 1, 0, self.days - 1)
        channel_idx = _pick(rng, self.pref[order_cust])
        channel = np.array(["web", "app", "store", "marketplace"], dtype=object)[channel_idx]
        in_store = channel == "store"
        hour = np.where(in_store, rng.uniform(9, 20, n), (rng.beta(3, 1.6, n) * 24))
        placed = self.start + (day * 86400 + hour * 3600).astype("timedelta64[s]")
        order_index = np.argsort(placed, kind="stable")
        order_cust, channel, placed, in_store = (
            order_cust[order_index],
            channel[order_index],
            placed[order_index],
            in_store[order_index],
        )
        home = cust["home_store"].to_numpy()[order_cust]
        other_store = rng.integers(0, len(self.store_ids), n)
        store = np.where(rng.random(n) < 0.8, home, other_store)
        location = np.where(
            in_store, self.store_ids[store], np.where(rng.random(n) < 0.8, "W01", "DC1")
        ).astype(object)
        employee = np.where(
            in_store,
            self.employee_ids[
                self.store_staff_start[store] + (rng.random(n) * self.store_staff[store]).astype(int)
            ],
            None,
        )
        guest = (rng.random(n) < np.where(in_store, 0.25, 0.05)) & (
            cust["segment"].to_numpy()[order_cust] == 0
        )
        self.ord = pd.DataFrame(
            {
                "order_id": _ids("O", n, 8),
                "cust": order_cust,
                "customer_id": np.where(guest, None, cust["customer_id"].to_numpy()[order_cust]),
                "channel": channel,
                "store": np.where(in_store, store, -1),
                "location_id": location,
                "placed": placed,
                "employee_id": employee,
                "device_id": np.where(in_store, None, cust["device"].to_numpy()[order_cust]),
                "ship_postcode": np.where(in_store, None, cust["postcode"].to_numpy()[order_cust]),
                "bill_postcode": cust["postcode"].to_numpy()[order_cust],
            }
        )

    def order_lines(self) -> None:
        rng, cust, orders, styles = self.rng, self.cust, self.ord, self.styles
        n_orders = len(orders)
        segment = cust["segment"].to_numpy()[orders["cust"].to_numpy()]
        online = orders["channel"].to_numpy() != "store"
        extra = rng.poisson(np.where(online, 0.7, 0.45) + (segment == SEGMENTS.index("big_spender")) * 0.8)
        n_lines = 1 + extra
        line_order = np.repeat(np.arange(n_orders), n_lines)
        line_no = np.arange(len(line_order)) - np.repeat(np.cumsum(n_lines) - n_lines, n_lines) + 1
        seg = segment[line_order]
        # category preference by segment
        base = np.array([c.weight for c in CATEGORIES])
        prefs = np.tile(base, (len(SEGMENTS), 1))
        prefs[SEGMENTS.index("bracketer")] *= [3, 2, 0.3, 0.5, 0.5, 0.3, 1, 1, 0.2]
        prefs[SEGMENTS.index("wardrober")] *= [4, 2, 2, 0.3, 0.3, 0.2, 1, 1.5, 0.1]
        prefs[SEGMENTS.index("switcher")] *= [0.3, 0.3, 8, 0.5, 0.2, 0.5, 0.5, 0.5, 0.0]
        prefs[SEGMENTS.index("ring")] *= [0.6, 1.5, 6, 0.3, 0.2, 0.3, 0.5, 1, 0.0]
        category = _pick(rng, prefs[seg])
        style = np.empty(len(line_order), dtype=np.int64)
        style_category = styles["category"].to_numpy()
        popularity = styles["popularity"].to_numpy()
        for c in range(len(CATEGORIES)):
            rows = np.flatnonzero(category == c)
            members = np.flatnonzero(style_category == c)
            weights = popularity[members] / popularity[members].sum()
            style[rows] = members[rng.choice(len(members), len(rows), p=weights)]
        # the customer's size in this size run; colour at random
        n_sizes = np.array([max(len(CATEGORIES[c].sizes), 1) for c in style_category])[style]
        cust_of_line = orders["cust"].to_numpy()[line_order]
        true_size = np.minimum(cust["true_size"].to_numpy()[cust_of_line], n_sizes - 1)
        size = np.clip(
            true_size + (rng.random(len(style)) < 0.1) * rng.choice([-1, 1], len(style)), 0, n_sizes - 1
        )
        color = (rng.random(len(style)) * styles["n_colors"].to_numpy()[style]).astype(int)
        bracket_extra = np.zeros(len(style), dtype=bool)
        # bracketing: several sizes of one style in one online order; all but one come back
        bracketing = (
            (seg == SEGMENTS.index("bracketer"))
            & online[line_order]
            & (n_sizes > 1)
            & (rng.random(len(style)) < 0.6)
        )
        if bracketing.any():
            copies = rng.integers(1, 3, bracketing.sum())
            source = np.repeat(np.flatnonzero(bracketing), copies)
            offset = np.concatenate([np.arange(1, k + 1) for k in copies]) * rng.choice([-1, 1], len(source))
            new_size = np.clip(size[source] + offset, 0, n_sizes[source] - 1)
            keep = new_size != size[source]
            source, new_size = source[keep], new_size[keep]
            line_order = np.concatenate([line_order, line_order[source]])
            style = np.concatenate([style, style[source]])
            size = np.concatenate([size, new_size])
            color = np.concatenate([color, color[source]])
            n_sizes = np.concatenate([n_sizes, n_sizes[source]])
            true_size = np.concatenate([true_size, true_size[source]])
            bracket_extra = np.concatenate([bracket_extra, np.ones(len(source), dtype=bool)])
            order = np.lexsort((np.arange(len(line_order)), line_order))
            line_order, style, size, color = line_order[order], style[order], size[order], color[order]
            n_sizes, true_size, bracket_extra = n_sizes[order], true_size[order], bracket_extra[order]
            counts = np.bincount(line_order, minlength=n_orders)
            line_no = np.arange(len(line_order)) - np.repeat(np.cumsum(counts) - counts, counts) + 1
        sku = self.style_first_sku[style] + size * styles["n_colors"].to_numpy()[style] + color
        quantity = np.where(rng.random(len(sku)) < 0.08, 2, 1) + (rng.random(len(sku)) < 0.01)
        quantity[bracket_extra] = 1
        price = self.skus["price_cents"].to_numpy()[sku]
        placed = orders["placed"].to_numpy()[line_order]
        month = placed.astype("datetime64[M]").astype(int) % 12 + 1
        on_sale = np.isin(month, [1, 7]) & (rng.random(len(sku)) < 0.3)
        unit_price = np.where(
            on_sale, np.round(price * rng.choice([0.5, 0.7, 0.8], len(sku)) / 100) * 100 - 1, price
        )
        unit_price = np.maximum(unit_price, 99)
        is_gift_card = styles["category"].to_numpy()[style] == CATEGORY_NAMES.index("gift_cards")
        unit_price[is_gift_card] = price[is_gift_card]
        # promotions: a share of orders get 10-25 % off, allocated to lines by value (cents exact)
        promo_order = rng.random(n_orders) < 0.2
        promo_rate = rng.choice([0.10, 0.15, 0.20, 0.25], n_orders)
        line_value = unit_price * quantity
        eligible = promo_order[line_order] & ~is_gift_card
        discount = np.where(eligible, np.floor(line_value * promo_rate[line_order]), 0).astype(np.int64)
        promotion = np.where(
            eligible, np.char.add("PROMO", (promo_rate[line_order] * 100).astype(int).astype(str)), None
        )
        self.lines = pd.DataFrame(
            {
                "order": line_order,
                "order_id": orders["order_id"].to_numpy()[line_order],
                "line_no": line_no,
                "sku_idx": sku,
                "sku": self.skus["sku"].to_numpy()[sku],
                "style": style,
                "category": styles["category"].to_numpy()[style],
                "size": size,
                "true_size": true_size,
                "n_sizes": n_sizes,
                "quantity": quantity,
                "unit_price": unit_price.astype(np.int64),
                "discount": discount,
                "promotion_id": promotion,
                "bracket_extra": bracket_extra,
            }
        )
        paid = line_value.astype(np.int64) - discount
        self.order_merch = np.bincount(line_order, weights=paid, minlength=n_orders).astype(np.int64)

    def payments(self) -> None:
        rng, orders = self.rng, self.ord
        n = len(orders)
        online = orders["channel"].to_numpy() != "store"
        shipping = np.where(online & (self.order_merch < 5000), 495, 0)
        self.shipping = shipping
        total = self.order_merch + shipping
        channel = orders["channel"].to_numpy()
        primary = np.where(
            channel == "store",
            np.where(rng.random(n) < 0.7, "card", "cash"),
            np.where(channel == "marketplace", "other", np.where(rng.random(n) < 0.78, "card", "paypal")),
        ).astype(object)
        cust = orders["cust"].to_numpy()
        fingerprint = np.where(
            rng.random(n) < 0.8, self.cust["card"].to_numpy()[cust], self.cust["card2"].to_numpy()[cust]
        )
        gift = (rng.random(n) < 0.08) & (total > 0)
        gift_amount = np.where(gift, np.minimum(total, rng.choice([2500, 5000, 10000], n)), 0)
        points = (~gift) & (rng.random(n) < 0.04) & (total > 1000)
        points_amount = np.where(points, np.minimum(total // 4, 1000), 0)
        rest = total - gift_amount - points_amount
        rows = []
        order_ids = orders["order_id"].to_numpy()
        for method, amount, mask, suffix in (
            ("gift_card", gift_amount, gift, "G"),
            ("loyalty_points", points_amount, points, "L"),
            (None, rest, rest > 0, "P"),
        ):
            idx = np.flatnonzero(mask)
            rows.append(
                pd.DataFrame(
                    {
                        "order_id": order_ids[idx],
                        "payment_id": np.char.add(
                            np.char.add("PAY", order_ids[idx].astype(str)), "-" + suffix
                        ).astype(object),
                        "method": primary[idx] if method is None else method,
                        "amount": amount[idx],
                        "card_fingerprint": np.where(
                            (primary[idx] == "card") if method is None else False, fingerprint[idx], None
                        ),
                    }
                )
            )
        self.pay = pd.concat(rows, ignore_index=True).sort_values(["order_id", "payment_id"], kind="stable")

    # returns ----------------------------------------------------------------------------------------

    def returns(self) -> None:
        rng, config, lines, orders = self.rng, self.config, self.lines, self.ord
        n = len(lines)
        order = lines["order"].to_numpy()
        cust = orders["cust"].to_numpy()[order]
        segment = self.cust["segment"].to_numpy()[cust]
        channel = orders["channel"].to_numpy()[order]
        online = channel != "store"
        category = lines["category"].to_numpy()
        style = lines["style"].to_numpy()
        cat = lambda attr: np.array([getattr(c, attr) for c in CATEGORIES])[category]  # noqa: E731
        returnable = cat("returnable").astype(bool)
        propensity = self.cust["propensity"].to_numpy()[cust] * config.return_rate_scale
        fit_bias = self.styles["fit_bias"].to_numpy()[style]
        misfit = (lines["size"].to_numpy() != lines["true_size"].to_numpy()) | (fit_bias != 0)
        p = {
            "doesnt_fit": cat("fit") * np.where(online, 3.2, 1.0) * np.where(misfit, 4.0, 1.0) * propensity,
            "defective": cat("defect") * self.styles["quality"].to_numpy()[style],
            "not_as_described": cat("not_as_described") * self.styles["described"].to_numpy()[style] * online,
            "changed_mind": cat("changed_mind") * np.where(online, 2.4, 1.0) * propensity,
            "damaged_in_transit": 0.004 * online,
            "wrong_item": 0.002 * online,
            "arrived_late": 0.002 * online,
            "other": 0.003 * propensity,
        }
        reasons = list(p)
        matrix = np.column_stack([np.clip(p[r], 0, 0.9) for r in reasons])
        serial = segment == SEGMENTS.index("serial_returner")
        matrix[serial] *= np.array([3, 1, 1, 7, 1, 1, 1, 2])
        matrix = np.clip(matrix, 0, 0.95)
        p_return = 1 - np.prod(1 - matrix, axis=1)
        typology = np.zeros(n, dtype=np.int64)
        returned = rng.random(n) < p_return
        reason = _pick(rng, matrix + 1e-12)
        typology[returned & serial] = TYPOLOGIES.index("serial_abuse")
        # bracketing extras come back (doesn't fit), the customer keeps one size
        extras = lines["bracket_extra"].to_numpy() & (rng.random(n) < 0.92)
        returned |= extras
        reason[extras] = reasons.index("doesnt_fit")
        # wardrobing: worn, returned just inside the window
        wardrobe = (
            (segment == SEGMENTS.index("wardrober"))
            & np.isin(category, [0, 1, 2, 7])
            & (rng.random(n) < config.wardrobe_rate)
        )
        returned |= wardrobe
        reason[wardrobe] = np.where(
            rng.random(wardrobe.sum()) < 0.6, reasons.index("changed_mind"), reasons.index("doesnt_fit")
        )
        typology[wardrobe] = TYPOLOGIES.index("wardrobing")
        # switchers: electronics bought online come back as empty boxes or other items
        switch = (
            (segment == SEGMENTS.index("switcher"))
            & (category == 2)
            & online
            & (rng.random(n) < config.switch_rate)
        )
        returned |= switch
        reason[switch] = np.where(
            rng.random(switch.sum()) < 0.6, reasons.index("defective"), reasons.index("not_as_described")
        )
        typology[switch] = np.where(
            rng.random(switch.sum()) < config.empty_box_share,
            TYPOLOGIES.index("empty_box"),
            TYPOLOGIES.index("item_switching"),
        )
        # rings: high-value online buys, claimed damaged/defective, often boxes come back empty
        ring = (
            (segment == SEGMENTS.index("ring"))
            & online
            & np.isin(category, [1, 2, 7])
            & (rng.random(n) < config.ring_rate)
        )
        returned |= ring
        reason[ring] = rng.choice(
            [
                reasons.index("damaged_in_transit"),
                reasons.index("defective"),
                reasons.index("not_as_described"),
            ],
            ring.sum(),
        )
        typology[ring] = TYPOLOGIES.index("ring")
        returned &= returnable
        idx = np.flatnonzero(returned)
        qty = lines["quantity"].to_numpy()[idx]
        return_qty = np.where(
            (qty > 1) & (rng.random(len(idx)) < 0.35), rng.integers(1, np.maximum(qty, 2)), qty
        )
        self._build_returns(idx, reason[idx], typology[idx], return_qty)

    def _build_returns(
        self, idx: np.ndarray, reason: np.ndarray, typology: np.ndarray, quantity: np.ndarray
    ) -> None:
        rng, lines, orders, cust = self.rng, self.lines, self.ord, self.cust
        reasons = np.array(
            [
                "doesnt_fit",
                "defective",
                "not_as_described",
                "changed_mind",
                "damaged_in_transit",
                "wrong_item",
                "arrived_late",
                "other",
            ],
            dtype=object,
        )
        order = lines["order"].to_numpy()[idx]
        channel = orders["channel"].to_numpy()[order]
        online = channel != "store"
        placed = orders["placed"].to_numpy()[order]
        category = lines["category"].to_numpy()[idx]
        window = np.array([c.window for c in CATEGORIES])[category]
        # one return per order, sometimes split in two over time (partial returns)
        split = rng.random(len(idx)) < 0.12
        group_key = order * 2 + split
        groups, group_of_line = np.unique(group_key, return_inverse=True)
        n_returns = len(groups)
        g_order = groups // 2
        g_online = orders["channel"].to_numpy()[g_order] != "store"
        g_typology = np.zeros(n_returns, dtype=np.int64)
        np.maximum.at(g_typology, group_of_line, typology)
        # time to return: a delivery delay online, then a gamma-distributed decision time
        delivery = np.where(g_online, rng.uniform(1, 5, n_returns), 0)
        delay = delivery + rng.gamma(2.0, 4.0, n_returns)
        g_window = np.zeros(n_returns)
        np.maximum.at(g_window, group_of_line, window.astype(float))
        wardrobing = g_typology == TYPOLOGIES.index("wardrobing")
        delay[wardrobing] = np.maximum(g_window[wardrobing] - rng.uniform(0.1, 3, wardrobing.sum()), 1)
        late = rng.random(n_returns) < 0.025  # some ask after the window closed: rejected
        delay[late] = g_window[late] + rng.uniform(2, 30, late.sum())
        requested = orders["placed"].to_numpy()[g_order] + (delay * 86400).astype("timedelta64[s]")
        # returns that would be asked for after the end of the history have not happened yet
        keep = requested < self.end
        renumber = np.cumsum(keep) - 1
        line_keep = keep[group_of_line]
        idx, reason, typology, quantity = (
            idx[line_keep],
            reason[line_keep],
            typology[line_keep],
            quantity[line_keep],
        )
        group_of_line = renumber[group_of_line[line_keep]]
        g_order, g_online, g_typology = g_order[keep], g_online[keep], g_typology[keep]
        late, requested = late[keep], requested[keep]
        n_returns = int(keep.sum())
        # returned in store (same or home store; buy-online-return-in-store) or by mail
        boris = g_online & (rng.random(n_returns) < 0.28)
        in_store = ~g_online | boris
        g_cust = orders["cust"].to_numpy()[g_order]
        store = np.where(g_online, cust["home_store"].to_numpy()[g_cust], orders["store"].to_numpy()[g_order])
        store = np.where(rng.random(n_returns) < 0.85, store, rng.integers(0, len(self.store_ids), n_returns))
        self._returns = dict(
            order=g_order,
            customer_id=orders["customer_id"].to_numpy()[g_order],
            cust=g_cust,
            in_store=in_store,
            store=np.where(in_store, store, -1),
            requested=requested,
            typology=g_typology,
            rejected=late,
            refund_method=np.where(rng.random(n_returns) < 0.06, "exchange", "original_tender").astype(
                object
            ),
        )
        self._lines = dict(
            ret=group_of_line,
            line=idx,
            reason=reasons[reason],
            typology=typology,
            quantity=quantity,
        )
        del placed, online, channel

    def receiptless(self) -> None:
        """Receiptless returns: stolen goods across stores (fraud), sweethearting, and gift returns."""
        rng, config = self.rng, self.config
        stores = len(self.store_ids)
        rows: list[dict[str, np.ndarray]] = []
        # stolen merchandise: bursts of receiptless returns of high-value items at several stores
        actors = max(2, round(config.customers * config.receiptless_fraudsters_per_1000 / 1000))
        burst = rng.integers(3, 13, actors)
        actor = np.repeat(np.arange(actors), burst)
        begin = rng.uniform(0, max(self.days - 60, 1), actors)
        day = begin[actor] + rng.uniform(0, 45, len(actor))
        with_account = rng.random(actors) < 0.4
        rows.append(
            dict(
                kind=np.full(len(actor), "stolen", dtype=object),
                actor=actor,
                day=day,
                store=rng.integers(0, stores, len(actor)),
                account=with_account[actor],
                value_floor=np.full(len(actor), 4000),
                lines=rng.integers(1, 4, len(actor)),
                typology=np.full(len(actor), TYPOLOGIES.index("receiptless_stolen")),
            )
        )
        # sweethearting: accomplices refunded by "their" employee, often without a receipt
        accomplices = np.flatnonzero(self.cust["segment"].to_numpy() == SEGMENTS.index("accomplice"))
        visits = rng.integers(4, 11, len(accomplices))
        who = np.repeat(accomplices, visits)
        rows.append(
            dict(
                kind=np.full(len(who), "sweetheart", dtype=object),
                actor=who,
                day=rng.uniform(0, self.days - 1, len(who)),
                store=self.employee_store[self.accomplice_of[who]],
                account=np.ones(len(who), dtype=bool),
                value_floor=np.full(len(who), 2000),
                lines=rng.integers(1, 3, len(who)),
                typology=np.full(len(who), TYPOLOGIES.index("sweethearting")),
            )
        )
        # legitimate gift returns without a receipt
        gifts = max(1, int(len(self._returns["order"]) * 0.012))
        rows.append(
            dict(
                kind=np.full(gifts, "gift", dtype=object),
                actor=np.arange(gifts),
                day=rng.uniform(0, self.days - 1, gifts),
                store=rng.integers(0, stores, gifts),
                account=rng.random(gifts) < 0.5,
                value_floor=np.zeros(gifts, dtype=np.int64),
                lines=np.ones(gifts, dtype=np.int64),
                typology=np.zeros(gifts, dtype=np.int64),
            )
        )
        spec = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
        self._receiptless = spec

    def _assemble(self) -> None:
        """Merge order-linked and receiptless returns into the contract tables, with truth."""
        rng, lines, orders, cust, skus = self.rng, self.lines, self.ord, self.cust, self.skus
        r, rl, extra = self._returns, self._lines, self._receiptless
        n_linked = len(r["order"])
        n_extra = len(extra["kind"])
        # receiptless: customer accounts (new ones for fraudsters with accounts), items from the catalogue
        extra_cust = np.full(n_extra, -1)
        sweet = extra["kind"] == "sweetheart"
        extra_cust[sweet] = extra["actor"][sweet]
        gift = extra["kind"] == "gift"
        has_gift_account = gift & extra["account"]
        extra_cust[has_gift_account] = rng.integers(0, len(cust), has_gift_account.sum())
        stolen = extra["kind"] == "stolen"
        new_accounts = stolen & extra["account"]
        fraud_accounts = np.unique(extra["actor"][new_accounts])
        first_day = pd.Series(extra["day"][new_accounts]).groupby(extra["actor"][new_accounts]).min()
        n_cust_before = len(cust)
        if len(fraud_accounts):
            created = self.start + (
                (first_day.reindex(fraud_accounts).to_numpy() - rng.uniform(1, 20, len(fraud_accounts)))
                * 86400
            ).astype("timedelta64[s]")
            added = pd.DataFrame(
                {
                    "customer_id": np.char.add(
                        "C",
                        np.char.zfill(
                            np.arange(n_cust_before + 1, n_cust_before + len(fraud_accounts) + 1).astype(str),
                            7,
                        ),
                    ).astype(object),
                    "segment": np.full(len(fraud_accounts), -1),
                    "created": created,
                    "home_store": rng.integers(0, len(self.store_ids), len(fraud_accounts)),
                    "region": self.store_region[rng.integers(0, len(self.store_ids), len(fraud_accounts))],
                    "propensity": 1.0,
                }
            )
            self.cust = cust = pd.concat([cust, added], ignore_index=True)
            account_of_actor = dict(
                zip(fraud_accounts, range(n_cust_before, n_cust_before + len(fraud_accounts)), strict=True)
            )
            extra_cust[new_accounts] = [account_of_actor[a] for a in extra["actor"][new_accounts]]
        extra_requested = self.start + (extra["day"] * 86400).astype("timedelta64[s]")
        # header table
        in_store = np.concatenate([r["in_store"], np.ones(n_extra, dtype=bool)])
        store = np.concatenate([r["store"], extra["store"]])
        requested = np.concatenate([r["requested"], extra_requested])
        typology = np.concatenate([r["typology"], extra["typology"]])
        rejected = np.concatenate([r["rejected"], np.zeros(n_extra, dtype=bool)])
        linked_customer = np.where(pd.notna(r["customer_id"]), r["cust"], -1)
        customer_idx = np.concatenate([linked_customer, extra_cust])
        order_id = np.concatenate(
            [orders["order_id"].to_numpy()[r["order"]], np.full(n_extra, None, dtype=object)]
        )
        # line table for receiptless returns: high-value items for fraud, anything for gifts
        k = extra["lines"]
        extra_ret = np.repeat(np.arange(n_extra), k) + n_linked
        price = skus["price_cents"].to_numpy()
        returnable_sku = np.array([c.returnable for c in CATEGORIES])[
            self.styles["category"].to_numpy()[skus["style"].to_numpy()]
        ]
        floor = np.repeat(extra["value_floor"], k)
        pool_expensive = np.flatnonzero(returnable_sku & (price >= 4000))
        pool_mid = np.flatnonzero(returnable_sku & (price >= 2000))
        pool_any = np.flatnonzero(returnable_sku & (price <= 6000))
        pick = np.where(
            floor >= 4000,
            pool_expensive[rng.integers(0, len(pool_expensive), len(floor))],
            np.where(
                floor >= 2000,
                pool_mid[rng.integers(0, len(pool_mid), len(floor))],
                pool_any[rng.integers(0, len(pool_any), len(floor))],
            ),
        )
        extra_reason = np.where(
            rng.random(len(pick)) < 0.5,
            "changed_mind",
            np.where(rng.random(len(pick)) < 0.5, "doesnt_fit", "other"),
        ).astype(object)
        # all return lines
        ret_of_line = np.concatenate([rl["ret"], extra_ret])
        sku_idx = np.concatenate([lines["sku_idx"].to_numpy()[rl["line"]], pick])
        line_typology = np.concatenate([rl["typology"], np.repeat(extra["typology"], k)])
        reason = np.concatenate([rl["reason"], extra_reason])
        quantity = np.concatenate([rl["quantity"], np.where(rng.random(len(pick)) < 0.15, 2, 1)])
        order_line_no = np.concatenate([lines["line_no"].to_numpy()[rl["line"]], np.full(len(pick), -1)])
        paid_unit = np.concatenate(
            [
                (
                    lines["unit_price"].to_numpy()[rl["line"]] * lines["quantity"].to_numpy()[rl["line"]]
                    - lines["discount"].to_numpy()[rl["line"]]
                )
                / lines["quantity"].to_numpy()[rl["line"]],
                price[pick] * 0.9,  # receiptless: lowest recent selling price
            ]
        )
        # sort lines by return, number them
        order_idx = np.lexsort((np.arange(len(ret_of_line)), ret_of_line))
        ret_of_line, sku_idx, line_typology, reason, quantity, order_line_no, paid_unit = (
            a[order_idx]
            for a in (ret_of_line, sku_idx, line_typology, reason, quantity, order_line_no, paid_unit)
        )
        n_ret = n_linked + n_extra
        counts = np.bincount(ret_of_line, minlength=n_ret)
        line_no = np.arange(len(ret_of_line)) - np.repeat(np.cumsum(counts) - counts, counts) + 1
        refund = np.floor(paid_unit * quantity).astype(np.int64)
        category = self.styles["category"].to_numpy()[skus["style"].to_numpy()[sku_idx]]
        # receipt/inspection times and status at the end of the horizon
        received = np.where(
            in_store,
            requested + (rng.uniform(2, 30, n_ret) * 60).astype("timedelta64[s]"),
            requested + (rng.uniform(3, 10, n_ret) * 86400).astype("timedelta64[s]"),
        )
        received = np.where(rejected, np.datetime64("NaT"), received)
        age_days = (self.end - received) / DAY
        status = np.where(
            rejected,
            "rejected",
            np.where(
                np.isnat(received) | (received >= self.end),
                "authorized",
                np.where(age_days < 2, "received", np.where(age_days < 4, "inspected", "completed")),
            ),
        ).astype(object)
        received = np.where(status == "authorized", np.datetime64("NaT"), received)
        # the refund tender: exchanges, store credit for receiptless, cash for sweethearting
        method = np.concatenate([r["refund_method"], np.full(n_extra, "store_credit", dtype=object)])
        sweet_ret = typology == TYPOLOGIES.index("sweethearting")
        method[sweet_ret] = np.where(rng.random(sweet_ret.sum()) < 0.6, "cash", "store_credit")
        stolen_ret = typology == TYPOLOGIES.index("receiptless_stolen")
        method[stolen_ret] = np.where(rng.random(stolen_ret.sum()) < 0.3, "cash", "store_credit")
        method[rejected] = None
        # employees: someone at the store; accomplices go to their sweetheart
        staff_pick = self.store_staff_start[np.maximum(store, 0)] + (
            rng.random(n_ret) * self.store_staff[np.maximum(store, 0)]
        ).astype(int)
        employee = np.where(in_store, self.employee_ids[staff_pick], None)
        accomplice_ret = np.zeros(n_ret, dtype=bool)
        accomplice_ret[n_linked:] = sweet
        sweet_emp = np.full(n_ret, -1)
        sweet_emp[n_linked:][sweet] = self.accomplice_of[extra["actor"][sweet]]
        employee[accomplice_ret] = self.employee_ids[sweet_emp[accomplice_ret]]
        # accomplices' ordinary store returns also go through the sweetheart now and then
        linked_acc = np.zeros(n_ret, dtype=bool)
        seg_of_cust = cust["segment"].to_numpy()
        linked_acc[:n_linked] = (
            (seg_of_cust[r["cust"]] == SEGMENTS.index("accomplice"))
            & r["in_store"]
            & (r["customer_id"] is not None)
        )
        employee[linked_acc] = self.employee_ids[self.accomplice_of[r["cust"][linked_acc[:n_linked]]]]
        store[linked_acc] = self.employee_store[self.accomplice_of[r["cust"][linked_acc[:n_linked]]]]
        typology[linked_acc] = TYPOLOGIES.index("sweethearting")
        method[linked_acc] = np.where(rng.random(linked_acc.sum()) < 0.6, "cash", "store_credit")
        line_typology[linked_acc[ret_of_line]] = TYPOLOGIES.index("sweethearting")
        location = np.where(in_store, self.store_ids[np.maximum(store, 0)], "RC1").astype(object)
        channel = np.where(in_store, "store", np.where(rng.random(n_ret) < 0.8, "mail", "web")).astype(object)
        # inspection: condition by typology and reason, then routing and realised value
        inspected = np.isin(status, ["inspected", "completed"])[ret_of_line]
        condition = self._conditions(reason, line_typology, category, rng)
        value_truth = self._values(sku_idx, category, condition, quantity, rng)
        feasible = value_truth["feasible"]
        static = np.array([enums.DISPOSITIONS.index(STATIC_ROUTING[c]) for c in condition])
        explore = rng.random(len(static)) < self.config.exploration
        options = feasible.astype(float) * rng.random(feasible.shape)
        chosen = np.where(explore, options.argmax(axis=1), static)
        chosen = np.where(feasible[np.arange(len(chosen)), chosen], chosen, static)
        disposed = np.asarray(status == "completed")[ret_of_line]
        recovery = value_truth["value"][np.arange(len(chosen)), chosen]
        # when completed returns were refunded and their lines disposed (within the 4 days "completed"
        # takes): a till refunds at receipt, the returns centre after inspection. A generator of its own,
        # so the rest of the history stays what it was for a seed.
        timing = np.random.default_rng((self.config.seed, 1129))
        done = status == "completed"
        refund_delay = np.where(
            in_store, timing.uniform(0, 120, n_ret), timing.uniform(0.3, 3.5, n_ret) * 86400
        )
        refunded_at = np.where(done, received + refund_delay.astype("timedelta64[s]"), np.datetime64("NaT"))
        dispose_delay = (timing.uniform(0.5, 3.9, len(ret_of_line)) * 86400).astype("timedelta64[s]")
        disposed_at = np.where(disposed, received[ret_of_line] + dispose_delay, np.datetime64("NaT"))
        self.returns_frame = pd.DataFrame(
            {
                "return_id": _ids("R", n_ret, 7),
                "order_id": order_id,
                "customer_id": np.where(
                    customer_idx >= 0, cust["customer_id"].to_numpy()[np.maximum(customer_idx, 0)], None
                ),
                "channel": channel,
                "location_id": location,
                "requested_at": _iso(requested),
                "received_at": _iso(received),
                "employee_id": employee,
                "status": status,
                "refund_method": method,
                "refunded_at": _iso(refunded_at),
            }
        )
        ret_ids = self.returns_frame["return_id"].to_numpy()
        rejected_line = rejected[ret_of_line]
        self.return_lines_frame = pd.DataFrame(
            {
                "return_id": ret_ids[ret_of_line],
                "line_no": line_no,
                "order_line_no": np.where(order_line_no > 0, order_line_no, np.nan),
                "sku": skus["sku"].to_numpy()[sku_idx],
                "quantity": quantity,
                "reason": reason,
                "condition": np.where(inspected, condition, None),
                "disposition": np.where(disposed, np.array(enums.DISPOSITIONS, dtype=object)[chosen], None),
                "refund_amount": np.where(rejected_line, None, _money(refund)),
                "recovery_value": np.where(disposed, _money(recovery), None),
                "disposed_at": _iso(disposed_at),
            }
        )
        self.return_lines_frame["order_line_no"] = self.return_lines_frame["order_line_no"].astype("Int64")
        self._facts = dict(
            requested=requested,
            received=received,
            typology=typology,
            value=np.bincount(ret_of_line, weights=np.where(rejected_line, 0, refund), minlength=n_ret),
            receiptless=order_id == None,  # noqa: E711
            method=method,
            customer_idx=customer_idx,
            status=status,
            condition_flag=np.bincount(
                ret_of_line,
                weights=np.isin(condition, ["empty_box", "wrong_item"]) & inspected,
                minlength=n_ret,
            )
            > 0,
        )
        self.truth_lines = pd.DataFrame(
            {
                "return_id": np.repeat(ret_ids[ret_of_line], len(enums.DISPOSITIONS)),
                "line_no": np.repeat(line_no, len(enums.DISPOSITIONS)),
                "disposition": np.tile(np.array(enums.DISPOSITIONS, dtype=object), len(line_no)),
                "feasible": feasible.reshape(-1),
                "net_value": _money(np.where(feasible, value_truth["value"], 0).reshape(-1)),
                "condition": np.repeat(condition, len(enums.DISPOSITIONS)),
            }
        )
        self.truth_return_lines = pd.DataFrame(
            {
                "return_id": ret_ids[ret_of_line],
                "line_no": line_no,
                "typology": np.array(TYPOLOGIES, dtype=object)[line_typology],
                "condition": condition,
            }
        )
        self.truth_returns = pd.DataFrame(
            {
                "return_id": ret_ids,
                "label": np.array([TYPOLOGY_LABEL[TYPOLOGIES[t]] for t in typology], dtype=object),
                "typology": np.array(TYPOLOGIES, dtype=object)[typology],
            }
        )

    @staticmethod
    def _conditions(
        reason: np.ndarray, typology: np.ndarray, category: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        n = len(reason)
        names = np.array(enums.CONDITIONS, dtype=object)
        u = rng.random(n)
        condition = np.where(u < 0.72, "new", np.where(u < 0.93, "open_box", "used")).astype(object)
        defect = reason == "defective"
        condition[defect] = np.where(rng.random(defect.sum()) < 0.85, "defective", "used")
        damaged = reason == "damaged_in_transit"
        condition[damaged] = np.where(rng.random(damaged.sum()) < 0.85, "damaged", "open_box")
        nad = reason == "not_as_described"
        condition[nad] = np.where(rng.random(nad.sum()) < 0.55, "new", "open_box")
        t = lambda name: typology == TYPOLOGIES.index(name)  # noqa: E731
        ward = t("wardrobing")
        condition[ward] = np.where(rng.random(ward.sum()) < 0.8, "used", "open_box")
        serial = t("serial_abuse")
        condition[serial] = rng.choice(
            np.array(["new", "open_box", "used"], dtype=object), serial.sum(), p=[0.2, 0.45, 0.35]
        )
        condition[t("empty_box")] = "empty_box"
        condition[t("item_switching")] = "wrong_item"
        ring = t("ring")
        condition[ring] = rng.choice(
            np.array(["empty_box", "wrong_item", "used", "damaged"], dtype=object),
            ring.sum(),
            p=[0.4, 0.25, 0.2, 0.15],
        )
        condition[t("receiptless_stolen") | t("sweethearting")] = "new"
        assert set(np.unique(condition)) <= set(names)
        return condition

    def _values(
        self,
        sku_idx: np.ndarray,
        category: np.ndarray,
        condition: np.ndarray,
        quantity: np.ndarray,
        rng: np.random.Generator,
    ) -> dict[str, np.ndarray]:
        """Net value (cents, for the returned quantity) of every disposition, and which are feasible."""
        price = self.skus["price_cents"].to_numpy()[sku_idx].astype(float)
        cost = self.skus["cost_cents"].to_numpy()[sku_idx].astype(float)
        rtv = self.styles["brand_rtv"].to_numpy()[self.skus["style"].to_numpy()[sku_idx]]
        sell = np.array([c.sell_through for c in CATEGORIES])[category]
        refurb = np.array([c.refurb for c in CATEGORIES])[category]
        c = {name: condition == name for name in enums.CONDITIONS}
        electronics = category == CATEGORY_NAMES.index("electronics")
        cond_liq = np.select(
            [c["new"], c["open_box"], c["used"], c["damaged"], c["defective"], c["wrong_item"]],
            [0.35, 0.3, 0.2, 0.1, 0.12, 0.15],
            0.0,
        )
        refurb_factor = np.select(
            [c["open_box"], c["used"], c["damaged"], c["defective"]], [1.0, 0.85, 0.6, 0.75], 0.0
        )
        values = {
            "restock": price * sell * 0.95 - 150,
            "open_box": price * 0.7 * sell - 250,
            "refurbish": price * 0.55 * refurb_factor - np.maximum(300, price * refurb) - 200 * electronics,
            "liquidate": cost * cond_liq - 50,
            "return_to_vendor": cost * rtv * np.where(c["defective"] | c["damaged"], 1.0, 0.5) - 300,
            "donate": cost * 0.12 - 100,
            "recycle": np.where(electronics, -400.0, -150.0),
        }
        feasible = {
            "restock": c["new"],
            "open_box": c["new"] | c["open_box"],
            "refurbish": c["open_box"] | c["used"] | c["damaged"] | c["defective"],
            "liquidate": ~c["empty_box"],
            "return_to_vendor": c["new"] | c["defective"] | c["damaged"],
            "donate": c["new"] | c["open_box"] | c["used"],
            "recycle": np.ones(len(condition), dtype=bool),
        }
        names = list(enums.DISPOSITIONS)
        matrix = np.column_stack([values[d] for d in names])
        noise = np.exp(rng.normal(0, 0.12, matrix.shape))
        matrix = np.where(matrix > 0, matrix * noise, matrix * (2 - noise)) + rng.normal(0, 60, matrix.shape)
        matrix[c["empty_box"], names.index("recycle")] = -50
        per_unit = np.round(matrix)
        return {
            "value": (per_unit * quantity[:, None]).astype(np.int64),
            "feasible": np.column_stack([feasible[d] for d in names]),
        }

    # labels -----------------------------------------------------------------------------------------

    def reviews(self) -> None:
        """Reviews as a real retailer has them: legacy-rule flags and a random audit, decided days later."""
        rng, facts, config = self.rng, self._facts, self.config
        n = len(self.returns_frame)
        requested = facts["requested"]
        value = facts["value"]
        customer = facts["customer_idx"]
        # prior returns of the same customer in the previous 30 days (strictly before)
        prior = np.zeros(n, dtype=np.int64)
        known = customer >= 0
        if known.any():
            frame = pd.DataFrame(
                {"c": customer[known], "t": requested[known], "i": np.flatnonzero(known)}
            ).sort_values(["c", "t"], kind="stable")
            t = frame["t"].to_numpy().astype("datetime64[s]").astype(np.int64)
            c = frame["c"].to_numpy()
            group_start = np.searchsorted(c, c, side="left")
            key = c.astype(np.int64) * (1 << 40) + (t - t.min())
            earlier = np.searchsorted(key, key - 30 * 86400, side="left")
            earlier = np.maximum(earlier, group_start)
            same_time = np.searchsorted(key, key, side="left")
            prior[frame["i"].to_numpy()] = same_time - earlier
        method = facts["method"]
        rules = {
            "receiptless_over_75": facts["receiptless"] & (value >= 7500),
            "frequent_returner": prior >= 3,
            "high_value": value >= 40000,
            "cash_over_150": (method == "cash") & (value >= 15000),
            "inspection_mismatch": facts["condition_flag"],
        }
        flagged = np.zeros(n, dtype=bool)
        for hit in rules.values():
            flagged |= hit
        self.legacy_flag = flagged
        self.legacy_rules = rules
        status = facts["status"]
        decidable = status != "rejected"
        delay = rng.uniform(1, 12, n)
        after = np.where(facts["condition_flag"], facts["received"], requested)
        reviewed_at = after + (delay * 86400).astype("timedelta64[s]")
        known_by = self.end - np.timedelta64(config.label_delay_days, "D")  # decisions known at the end
        if config.review_budget is None:
            reviewed_flag = flagged & decidable & (rng.random(n) < config.review_share_of_flags)
            audit = decidable & ~reviewed_flag & (rng.random(n) < config.audit_rate)
        else:  # the budget is what is known at the end: drawn among the decisions made by then
            known = decidable & (reviewed_at < known_by)
            audits = min(round(config.review_budget * config.audit_share), int((known & ~flagged).sum()))
            flags = min(config.review_budget - audits, int((known & flagged).sum()))
            reviewed_flag = np.zeros(n, dtype=bool)
            reviewed_flag[rng.choice(np.flatnonzero(known & flagged), flags, replace=False)] = True
            audit = np.zeros(n, dtype=bool)
            audit[rng.choice(np.flatnonzero(known & ~flagged), audits, replace=False)] = True
        label = self.truth_returns["label"].to_numpy()
        u = rng.random(n)
        outcome = np.where(
            label == "fraud",
            np.where(u < 0.88, "fraud", np.where(u < 0.92, "abuse", "legitimate")),
            np.where(
                label == "abuse",
                np.where(u < 0.85, "abuse", np.where(u < 0.9, "fraud", "legitimate")),
                np.where(u < 0.97, "legitimate", "abuse"),
            ),
        ).astype(object)
        typology = self.truth_returns["typology"].to_numpy()
        chosen = (reviewed_flag | audit) & (reviewed_at < known_by)
        # chargebacks: some ring fraud surfaces weeks later through the card schemes
        chargeback = (typology == "ring") & ~chosen & (rng.random(n) < 0.4)
        chargeback_at = requested + (rng.uniform(30, 60, n) * 86400).astype("timedelta64[s]")
        chargeback &= chargeback_at < known_by
        ids = self.returns_frame["return_id"].to_numpy()
        frames = []
        for mask, when, source, result in (
            (chosen, reviewed_at, np.where(reviewed_flag, "rule_flag", "random_audit"), outcome),
            (
                chargeback,
                chargeback_at,
                np.full(n, "chargeback", dtype=object),
                np.full(n, "fraud", dtype=object),
            ),
        ):
            idx = np.flatnonzero(mask)
            frames.append(
                pd.DataFrame(
                    {
                        "return_id": ids[idx],
                        "reviewed_at": _iso(when[idx]),
                        "outcome": result[idx],
                        "fraud_type": np.where(result[idx] == "legitimate", None, typology[idx]),
                        "source": np.asarray(source, dtype=object)[idx],
                        "reviewer": np.where(
                            np.asarray(source)[idx] == "chargeback",
                            None,
                            np.char.add("analyst", rng.integers(1, 6, len(idx)).astype(str)).astype(object),
                        ),
                    }
                )
            )
        reviews = pd.concat(frames, ignore_index=True)
        reviews["fraud_type"] = np.where(reviews["fraud_type"] == "none", "other", reviews["fraud_type"])
        self.reviews_frame = reviews.sort_values(["return_id", "reviewed_at"], kind="stable").reset_index(
            drop=True
        )

    # output -----------------------------------------------------------------------------------------

    def write(self, out: Path) -> dict[str, int]:
        out.mkdir(parents=True, exist_ok=True)
        truth = out / "_truth"
        truth.mkdir(exist_ok=True)
        cust = self.cust
        spend = np.bincount(self.ord["cust"].to_numpy(), weights=self.order_merch, minlength=len(cust))
        tier = np.where(spend > 200000, "gold", np.where(spend > 60000, "silver", None)).astype(object)
        counts = {
            "customers": _write(
                out,
                "customers",
                pd.DataFrame(
                    {
                        "customer_id": cust["customer_id"],
                        "created_at": _iso(cust["created"].to_numpy()),
                        "region": cust["region"],
                        "loyalty_tier": tier,
                        "loyalty_points": (spend // 100).astype(np.int64) % 20000,
                    }
                ),
            ),
            "locations": _write(out, "locations", self.locations_frame),
            "products": _write(out, "products", self.products),
        }
        orders = self.ord
        counts["orders"] = _write(
            out,
            "orders",
            pd.DataFrame(
                {
                    "order_id": orders["order_id"],
                    "customer_id": orders["customer_id"],
                    "channel": orders["channel"],
                    "location_id": orders["location_id"],
                    "placed_at": _iso(orders["placed"].to_numpy()),
                    "employee_id": orders["employee_id"],
                    "ship_postcode": orders["ship_postcode"],
                    "bill_postcode": orders["bill_postcode"],
                    "device_id": orders["device_id"],
                    "currency": "GBP",
                    "shipping_amount": _money(self.shipping),
                }
            ),
        )
        lines = self.lines
        counts["order_lines"] = _write(
            out,
            "order_lines",
            pd.DataFrame(
                {
                    "order_id": lines["order_id"],
                    "line_no": lines["line_no"],
                    "sku": lines["sku"],
                    "quantity": lines["quantity"],
                    "unit_price": _money(lines["unit_price"].to_numpy()),
                    "discount": _money(lines["discount"].to_numpy()),
                    "promotion_id": lines["promotion_id"],
                }
            ),
        )
        payments = self.pay.copy()
        payments["amount"] = _money(payments["amount"].to_numpy())
        counts["payments"] = _write(out, "payments", payments)
        counts["returns"] = _write(out, "returns", self.returns_frame)
        counts["return_lines"] = _write(out, "return_lines", self.return_lines_frame)
        counts["fraud_reviews"] = _write(out, "fraud_reviews", self.reviews_frame)
        # ground truth, apart
        _write(
            truth,
            "returns",
            self.truth_returns.assign(legacy_flag=np.where(self.legacy_flag, "true", "false")),
        )
        _write(truth, "return_lines", self.truth_return_lines)
        _write(truth, "return_line_values", self.truth_lines)
        segment_names = np.array([*SEGMENTS, "receiptless_fraudster"], dtype=object)
        _write(
            truth,
            "customers",
            pd.DataFrame(
                {
                    "customer_id": cust["customer_id"],
                    "segment": segment_names[cust["segment"].to_numpy()],
                    "ring_id": np.concatenate([self.ring_id, np.full(len(cust) - len(self.ring_id), -1)]),
                }
            ),
        )
        _write(
            truth,
            "employees",
            pd.DataFrame(
                {
                    "employee_id": self.employee_ids,
                    "location_id": self.store_ids[self.employee_store],
                    "sweetheart": np.where(
                        np.isin(np.arange(len(self.employee_ids)), self.sweethearts), "true", "false"
                    ),
                }
            ),
        )
        styles = self.styles
        _write(
            truth,
            "styles",
            pd.DataFrame(
                {
                    "style_id": styles["style_id"],
                    "category": np.array(CATEGORY_NAMES, dtype=object)[styles["category"].to_numpy()],
                    "quality": styles["quality"].round(3),
                    "described": styles["described"].round(3),
                    "fit_bias": styles["fit_bias"],
                    "brand_rtv": styles["brand_rtv"],
                }
            ),
        )
        return counts

    def figures(self) -> dict[str, float]:
        """Headline rates of the simulated history (what the tests hold within ranges)."""
        sold = float(self.order_merch.sum())
        online = self.ord["channel"].to_numpy() != "store"
        value = self._facts["value"]
        linked = self.returns_frame["order_id"].notna().to_numpy()
        order_ids = self.returns_frame["order_id"].to_numpy()
        position = pd.Index(self.ord["order_id"]).get_indexer(order_ids[linked])
        returned_online = value[linked][online[position]].sum()
        returned_store = value[linked][~online[position]].sum()
        labels = self.truth_returns["label"].to_numpy()
        return {
            "return_rate_by_value": float(value.sum() / sold),
            "online_return_rate_by_value": float(returned_online / self.order_merch[online].sum()),
            "store_return_rate_by_value": float(returned_store / self.order_merch[~online].sum()),
            "fraud_abuse_share_of_returns": float(np.mean(labels != "legitimate")),
            "reviewed_share_of_returns": float(self.reviews_frame["return_id"].nunique() / len(labels)),
        }


def simulate(config: SimulationConfig, out: Path) -> SimulationResult:
    """Simulate a retailer and write its data-contract files (and `_truth/`) to `out`."""
    started = time.perf_counter()
    retailer = _Retailer(config)
    retailer.catalogue()
    retailer.locations()
    retailer.customers()
    retailer.orders()
    retailer.order_lines()
    retailer.payments()
    retailer.returns()
    retailer.receiptless()
    retailer._assemble()
    retailer.reviews()
    tables = retailer.write(Path(out))
    return SimulationResult(Path(out), tables, time.perf_counter() - started, retailer.figures())
