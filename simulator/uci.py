"""The UCI "Online Retail" file (a real UK gift-ware retailer, 2010-12 .. 2011-12) in the data contract.

`convert_uci(source, out_dir)` reads the file (Parquet, CSV or the original .xlsx) and writes the
contract CSV files customers, locations, products, orders, order_lines, payments, returns and
return_lines (the file has no fraud reviews), returning a `UciReport` of what was kept and dropped.
Imports `oms` (the contract and its errors) only.

Mapping rules:

- Exact duplicate rows are dropped (counted).
- Goods are StockCodes of 5 digits optionally followed by letters (85123A), normalised to upper case
  (85123a and 85123A are one sku). Every other code is excluded and counted by kind: postage and
  carriage (POST, DOT, C2), fees and commission (AMAZONFEE, CRUK), manual adjustments (M, m),
  discounts (D), bank charges, samples (S), gift vouchers (gift_0001_*), other non-goods (DCGS*,
  PADS, ...). Bad-debt adjustments ('A' invoices, code B) are excluded too, and so are goods lines
  priced at 0: stock write-offs (negative quantity on a sales invoice, no customer) and the other
  zero-price lines. Lines whose quantity sign contradicts their invoice would be excluded as well.
- A sales invoice (not starting with "C", quantity > 0) is an order: order_id = InvoiceNo, channel
  web, location the one warehouse `UK-WH`, currency GBP, placed_at = the invoice's earliest
  InvoiceDate, which is UK local time (localised to Europe/London, written in UTC). Its lines are
  order lines numbered 1, 2, ... in file order. One payment per order: method other (tender
  unknown), amount = the order total.
- Unit prices are rounded to cents half up; the report counts prices that needed it beyond float
  noise. Line values are quantity x the rounded unit price.
- CustomerID (a float with nulls) becomes a text id ("17850"); no CustomerID = guest. A customer's
  created_at is their first kept invoice (sale or credit); region is their most frequent Country.
- Products are the kept skus: style_id = the 5-digit stem, description = the most common cleaned
  description (the text "nan" means none), list_price = the most common sale unit price (ties: the
  higher; skus only ever credited use their credit prices), category from description keywords
  (`CATEGORY_KEYWORDS`, first match wins, else giftware), department giftware, 30-day window, returnable.
- A credit invoice ("C", quantity < 0) is one or more returns. Each credit line is linked to the same
  customer's most recent purchase line of the same sku placed strictly before the credit; the lines
  of one credit invoice become one return per linked order plus one receiptless return (no order)
  for the unlinked lines, numbered in file order: C536379-1, C536379-2, ... Channel mail, location
  the warehouse, requested_at = received_at = the credit invoice's time, status completed, refund
  method original_tender. Return lines: quantity = -Quantity, reason other (unknown), refund_amount =
  quantity x the credited unit price, order_line_no = the linked line. A linked line takes back at most
  what is left of the purchase line (after earlier credits linked to it); the rest of its units were
  bought before the data window and become a line of the credit's receiptless return (counted).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd

from oms import contract
from oms.errors import RecoupError

SOURCE_COLUMNS = (
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
)
GOODS_CODE = r"\d{5}[A-Z]*"
SOURCE_TIMEZONE = "Europe/London"
CURRENCY = "GBP"
WAREHOUSE = {
    "location_id": "UK-WH",
    "kind": "warehouse",
    "region": "United Kingdom",
    "name": "Online Retail warehouse (UCI)",
}
RETURN_WINDOW_DAYS = 30
DEPARTMENT = "giftware"
FALLBACK_CATEGORY = "giftware"

# Why a line is left out, in the order the rules are applied, with the report's wording.
EXCLUSION_KINDS: dict[str, str] = {
    "bad_debt": "bad debt ('A' invoices, B)",
    "postage": "postage and carriage (POST, DOT, C2)",
    "fees": "fees and commission (AMAZONFEE, CRUK)",
    "manual": "manual adjustments (M)",
    "discount": "discounts (D)",
    "bank_charges": "bank charges",
    "samples": "samples (S)",
    "gift_vouchers": "gift vouchers (gift_0001_*)",
    "other_non_goods": "other non-goods (DCGS*, PADS, ...)",
    "stock_write_off": "zero-price stock write-offs",
    "zero_price": "other zero-price lines",
    "sign_mismatch": "quantity sign contradicts the invoice",
}
NON_GOODS_CODES: dict[str, str] = {
    "B": "bad_debt",
    "POST": "postage",
    "DOT": "postage",
    "C2": "postage",
    "AMAZONFEE": "fees",
    "CRUK": "fees",
    "M": "manual",
    "D": "discount",
    "BANK CHARGES": "bank_charges",
    "S": "samples",
}
GIFT_VOUCHER_PREFIX = "GIFT_"

# Description keywords per category: whole words or phrases, as regex alternatives of upper-case text.
# The first category that matches wins, so the specific ones come first ("CHRISTMAS LIGHTS" is
# christmas, "TEA LIGHT HOLDER" candles & lights); no match means the fallback category.
CATEGORY_KEYWORDS: tuple[tuple[str, str], ...] = (
    ("christmas", "CHRISTMAS|XMAS|ADVENT|SANTA|REINDEER|NATIVITY|SNOWFLAKE|BAUBLE|BAUBLES|TINSEL"),
    (
        "candles & lights",
        "CANDLE|CANDLES|CANDLESTICK|CANDLESTICKS|T-LIGHT|T-LIGHTS|TEALIGHT|TEA LIGHT|"
        "LIGHT|LIGHTS|LANTERN|LAMP|NIGHTLIGHT|CHANDELIER",
    ),
    ("bags", "BAG|BAGS|TOTE|SHOPPER|RUCKSACK|BACKPACK"),
    (
        "jewellery & accessories",
        "NECKLACE|NECKLACES|NECKLAC|EARRINGS|BRACELET|RING|BROOCH|HAIR|HAIRCLIP|HAIRSLIDE|"
        "PURSE|UMBRELLA|CHARM|JEWELLERY|DIAMANTE|SCARF|GLOVES|WALLET|KEYRING",
    ),
    (
        "toys & games",
        "TOY|TOYS|GAME|GAMES|PUZZLE|JIGSAW|DOLL|DOLLS|SOLDIER|SKIPPING|DOMINOES|SPINNING|"
        "KNITTING|PLAYHOUSE|BALLOONS|MAGIC|CRAYONS|COLOURING|TEDDY",
    ),
    (
        "stationery & cards",
        "CARD|CARDS|WRAP|PAPER|NOTEBOOK|NOTEBOOKS|PEN|PENS|PENCIL|PENCILS|STICKER|"
        "STICKERS|ENVELOPE|ENVELOPES|TAG|TAGS|CALENDAR|DIARY|BOOK|ERASER|RIBBON|RIBBONS|"
        "TISSUES|STAMP|STAMPS|CONFETTI",
    ),
    (
        "kitchen & dining",
        "MUG|MUGS|CUP|CUPS|SAUCER|PLATE|PLATES|BOWL|BOWLS|TEA|TEAPOT|COFFEE|CAKE|CAKES|"
        "CAKESTAND|BAKING|KITCHEN|NAPKINS|NAPKIN|JAR|JARS|LUNCH|SPOON|SPOONS|CUTLERY|"
        "APRON|WINE|GLASS|GLASSES|TUMBLER|TRAY|CHOPSTICKS|JUG|RECIPE|EGG|OVEN|TOAST|"
        "TOASTRACK|BISCUIT|CASES|PANTRY|DISH|SCALES|TIN|TINS|PICNIC|CHOCOLATE|STRAWS|"
        "PARASOLS|BEAKER|MOULD|COASTER|COASTERS",
    ),
    (
        "garden",
        "GARDEN|PLANT|PLANTER|POT|POTS|FLOWER|WATERING|HERB|HERBS|BIRD|BIRDHOUSE|FEEDER|"
        "SEED|SEEDS|TROWEL|SPADE|GNOME",
    ),
    (
        "home decor",
        "FRAME|FRAMES|CUSHION|CUSHIONS|CLOCK|SIGN|DOORMAT|HOOK|HOOKS|VASE|MIRROR|"
        "DECORATION|ORNAMENT|WALL|DOOR|DOORSTOP|HANGING|HEART|HEARTS|BUNTING|GARLAND|"
        "QUILT|THROW|BLANKET|DRAWER|CABINET|SHELF|STORAGE|BOX|BOXES|BASKET|WREATH|WICKER|"
        "CHALKBOARD|PHOTO|HOLDER|COAT|RACK|CURTAIN|SOAP|TOWEL|HOT WATER BOTTLE|HOTTIE",
    ),
)


class UciSourceError(RecoupError):
    """The given file is not the UCI Online Retail file (or cannot be read)."""


@dataclass
class UciReport:
    """What `convert_uci` kept and dropped (figures of the rows after reading the file)."""

    source_rows: int = 0
    duplicate_rows: int = 0
    customers: int = 0
    products: int = 0
    orders: int = 0
    guest_orders: int = 0
    order_lines: int = 0
    order_value: Decimal = Decimal("0.00")
    returns: int = 0
    receiptless_returns: int = 0
    return_lines: int = 0
    returned_value: Decimal = Decimal("0.00")
    linked_return_lines: int = 0
    receiptless_return_lines: int = 0
    over_returned_lines: int = 0  # credit lines asking more than was left of their purchase line
    split_return_lines: int = 0  # of those, the receiptless lines their excess became (both parts kept)
    rounded_prices: int = 0
    excluded: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def excluded_lines(self) -> int:
        return sum(self.excluded.values())

    def lines(self) -> list[str]:
        """The printed report, one line per figure."""
        share = self.receiptless_return_lines / self.return_lines if self.return_lines else 0.0
        out = [
            f"source rows                 {self.source_rows:>10,}",
            f"exact duplicates dropped    {self.duplicate_rows:>10,}",
            f"excluded lines              {self.excluded_lines:>10,}",
        ]
        out += [
            f"  {EXCLUSION_KINDS.get(kind, kind):<38}{count:>8,}"
            for kind, count in self.excluded.items()
            if count
        ]
        out += [
            f"customers                   {self.customers:>10,}",
            f"products                    {self.products:>10,}",
            f"orders                      {self.orders:>10,}  ({self.guest_orders:,} guest)",
            f"order lines                 {self.order_lines:>10,}  (GBP {self.order_value:,})",
            f"returns                     {self.returns:>10,}  ({self.receiptless_returns:,} receiptless)",
            f"return lines                {self.return_lines:>10,}  (GBP {self.returned_value:,} refunded)",
            f"  linked to a purchase      {self.linked_return_lines:>10,}",
            f"  receiptless               {self.receiptless_return_lines:>10,}  ({share:.1%})",
            f"  beyond what the line sold {self.over_returned_lines:>10,}  (the rest receiptless)",
            f"prices rounded to cents     {self.rounded_prices:>10,}",
        ]
        if self.seconds:
            out.append(f"converted in {self.seconds:.1f} s")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


# --- reading -------------------------------------------------------------------------------------


def read_uci(source: Path) -> pd.DataFrame:
    """The raw rows of the UCI file (.parquet, .csv or .xlsx) with the original column types."""
    source = Path(source)
    if not source.is_file():
        raise UciSourceError(f"{source}: no such file")
    suffix = source.suffix.lower()
    try:
        if suffix == ".parquet":
            raw = pd.read_parquet(source)
        elif suffix == ".csv":
            raw = _read_csv(source)
        elif suffix in (".xlsx", ".xls"):
            raw = pd.read_excel(source, dtype={"InvoiceNo": str, "StockCode": str, "Description": str})
        else:
            raise UciSourceError(f"{source.name}: expected a .parquet, .csv or .xlsx file")
    except ImportError as exc:
        raise UciSourceError(f"{source.name}: reading it needs an extra package ({exc})") from exc
    except (OSError, ValueError) as exc:
        raise UciSourceError(f"{source.name}: cannot be read: {exc}") from exc
    missing = [c for c in SOURCE_COLUMNS if c not in raw.columns]
    if missing:
        raise UciSourceError(
            f"{source.name}: not the UCI Online Retail file (no column {', '.join(missing)})"
        )
    raw = raw[list(SOURCE_COLUMNS)].copy()
    try:
        for name in ("InvoiceNo", "StockCode", "Description", "Country"):
            raw[name] = raw[name].astype("str")
        raw["Quantity"] = pd.to_numeric(raw["Quantity"]).astype("int64")
        raw["UnitPrice"] = pd.to_numeric(raw["UnitPrice"]).astype("float64")
        raw["CustomerID"] = pd.to_numeric(raw["CustomerID"]).astype("float64")
        if not pd.api.types.is_datetime64_any_dtype(raw["InvoiceDate"]):
            # The original CSV export writes US dates ("12/1/2010 8:26").
            text = raw["InvoiceDate"].astype("str")
            iso = pd.to_datetime(text, format="ISO8601", errors="coerce")
            raw["InvoiceDate"] = iso.fillna(pd.to_datetime(text, format="%m/%d/%Y %H:%M", errors="coerce"))
    except (ValueError, TypeError) as exc:
        raise UciSourceError(f"{source.name}: unexpected values: {exc}") from exc
    if raw["InvoiceDate"].isna().any():
        raise UciSourceError(
            f"{source.name}: {int(raw['InvoiceDate'].isna().sum())} rows have no InvoiceDate"
        )
    return raw


def _read_csv(source: Path) -> pd.DataFrame:
    """The CSV export: UTF-8, or Latin-1 as the widely copied original ("data.csv") is."""
    text_columns = {"InvoiceNo": str, "StockCode": str, "Description": str, "Country": str}
    try:
        return pd.read_csv(source, dtype=text_columns, encoding="utf-8")
    except UnicodeDecodeError:
        return pd.read_csv(source, dtype=text_columns, encoding="latin-1")


# --- the mapping ---------------------------------------------------------------------------------


def convert_uci(source: Path, out_dir: Path) -> UciReport:
    """Write the UCI file as contract CSV files into `out_dir` and report what was kept and dropped."""
    started = time.perf_counter()
    raw = read_uci(source)
    report = UciReport(source_rows=len(raw))
    duplicated = raw.duplicated()
    report.duplicate_rows = int(duplicated.sum())
    lines = _normalise(raw[~duplicated].reset_index(drop=True))

    kind = _classify(lines)
    counts = kind.value_counts()
    report.excluded = {k: int(counts.get(k, 0)) for k in EXCLUSION_KINDS}
    kept = lines[kind.isin(["sale", "credit"])].copy()
    kept["is_sale"] = kind[kept.index] == "sale"
    price_cents = kept["UnitPrice"] * 100
    report.rounded_prices = int(((price_cents - price_cents.round()).abs() > 1e-6).sum())
    kept["unit_cents"] = np.floor(price_cents + 0.5 + 1e-6).astype("int64")
    kept["at"] = _invoice_times(kept)

    sales = kept[kept["is_sale"]].copy()
    sales["line_no"] = sales.groupby("invoice", sort=False).cumcount() + 1
    sales["line_cents"] = sales["Quantity"] * sales["unit_cents"]
    orders = sales.groupby("invoice", sort=False).agg(
        customer_id=("customer_id", "first"), placed_at=("at", "first"), total_cents=("line_cents", "sum")
    )
    credits = _link_credits(kept[~kept["is_sale"]].copy(), sales)
    returns = credits.groupby("return_id", sort=False).agg(
        order_id=("linked_order", "first"), customer_id=("customer_id", "first"), requested_at=("at", "first")
    )

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    customers = _customers(kept)
    products = _products(kept)
    _write(out_dir, "customers", customers)
    _write(out_dir, "locations", pd.DataFrame([WAREHOUSE]))
    _write(out_dir, "products", products)
    _write(
        out_dir,
        "orders",
        pd.DataFrame(
            {
                "order_id": orders.index,
                "customer_id": orders["customer_id"].to_numpy(),
                "channel": "web",
                "location_id": WAREHOUSE["location_id"],
                "placed_at": _iso(orders["placed_at"]).to_numpy(),
                "currency": CURRENCY,
            }
        ),
    )
    _write(
        out_dir,
        "order_lines",
        pd.DataFrame(
            {
                "order_id": sales["invoice"],
                "line_no": sales["line_no"],
                "sku": sales["sku"],
                "quantity": sales["Quantity"],
                "unit_price": _money(sales["unit_cents"]),
            }
        ),
    )
    _write(
        out_dir,
        "payments",
        pd.DataFrame(
            {
                "order_id": orders.index,
                "payment_id": "P" + orders.index.to_series(),
                "method": "other",
                "amount": _money(orders["total_cents"]).to_numpy(),
            }
        ),
    )
    requested_at = _iso(returns["requested_at"]).to_numpy()
    _write(
        out_dir,
        "returns",
        pd.DataFrame(
            {
                "return_id": returns.index,
                "order_id": returns["order_id"].to_numpy(),
                "customer_id": returns["customer_id"].to_numpy(),
                "channel": "mail",
                "location_id": WAREHOUSE["location_id"],
                "requested_at": requested_at,
                "received_at": requested_at,
                "status": "completed",
                "refund_method": "original_tender",
            }
        ),
    )
    _write(
        out_dir,
        "return_lines",
        pd.DataFrame(
            {
                "return_id": credits["return_id"],
                "line_no": credits["return_line_no"],
                "order_line_no": credits["linked_line_no"],
                "sku": credits["sku"],
                "quantity": credits["quantity"],
                "reason": "other",
                "refund_amount": _money(credits["refund_cents"]),
            }
        ),
    )

    linked = credits["linked_order"].notna()
    report.customers = len(customers)
    report.products = len(products)
    report.orders = len(orders)
    report.guest_orders = int(orders["customer_id"].isna().sum())
    report.order_lines = len(sales)
    report.order_value = _decimal(int(orders["total_cents"].sum()))
    report.returns = len(returns)
    report.receiptless_returns = int(returns["order_id"].isna().sum())
    report.return_lines = len(credits)
    report.returned_value = _decimal(int(credits["refund_cents"].sum()))
    report.linked_return_lines = int(linked.sum())
    report.receiptless_return_lines = int((~linked).sum())
    report.over_returned_lines = int(credits.drop_duplicates("position")["over_returned"].sum())
    report.split_return_lines = len(credits) - credits["position"].nunique()
    report.seconds = time.perf_counter() - started
    return report


def _normalise(lines: pd.DataFrame) -> pd.DataFrame:
    """Trimmed codes and ids, upper-case skus, text customer ids (NA for guests)."""
    lines = lines.copy()
    lines["invoice"] = lines["InvoiceNo"].str.strip()
    lines["sku"] = lines["StockCode"].str.strip().str.upper()
    customer = lines["CustomerID"].round().astype("Int64").astype("string")
    lines["customer_id"] = customer.astype("str")
    return lines


def _classify(lines: pd.DataFrame) -> pd.Series:
    """Per line: 'sale', 'credit', or the exclusion kind (a key of EXCLUSION_KINDS)."""
    sku, invoice = lines["sku"], lines["invoice"]
    quantity, price = lines["Quantity"], lines["UnitPrice"]
    credit = invoice.str.startswith("C")
    goods = sku.str.fullmatch(GOODS_CODE)
    code_kind = sku.map(NON_GOODS_CODES)
    conditions = [
        invoice.str.startswith("A") | (code_kind == "bad_debt"),
        code_kind.notna(),
        sku.str.startswith(GIFT_VOUCHER_PREFIX),
        ~goods,
        (price == 0) & (quantity < 0) & ~credit & lines["customer_id"].isna(),
        price <= 0,
        credit & (quantity < 0),
        ~credit & (quantity > 0),
    ]
    choices = [
        "bad_debt",
        code_kind,
        "gift_vouchers",
        "other_non_goods",
        "stock_write_off",
        "zero_price",
        "credit",
        "sale",
    ]
    kinds = np.select(
        [np.asarray(c.fillna(False), dtype=bool) for c in conditions],
        [c.to_numpy(dtype=object) if isinstance(c, pd.Series) else c for c in choices],
        default="sign_mismatch",
    )
    return pd.Series(kinds, index=lines.index, dtype="str")


def _invoice_times(lines: pd.DataFrame) -> pd.Series:
    """Each line's invoice time: the invoice's earliest InvoiceDate (UK local time) in UTC."""
    local = lines.groupby("invoice", sort=False)["InvoiceDate"].min()
    # Europe/London: an hour that occurs twice (October) is read as GMT, a skipped one (March) moved on.
    utc = local.dt.tz_localize(
        SOURCE_TIMEZONE, ambiguous=np.zeros(len(local), dtype=bool), nonexistent="shift_forward"
    ).dt.tz_convert("UTC")
    return lines["invoice"].map(utc).dt.as_unit("us")


def _link_credits(credits: pd.DataFrame, sales: pd.DataFrame) -> pd.DataFrame:
    """Link each credit line to the customer's latest earlier purchase line of the sku; number returns."""
    credits["position"] = np.arange(len(credits))
    credits["quantity"] = -credits["Quantity"]
    credits["refund_cents"] = credits["quantity"] * credits["unit_cents"]
    purchases = sales.loc[
        sales["customer_id"].notna(), ["customer_id", "sku", "at", "invoice", "line_no", "Quantity"]
    ].rename(
        columns={
            "at": "placed_at",
            "invoice": "linked_order",
            "line_no": "linked_line_no",
            "Quantity": "linked_quantity",
        }
    )
    purchases["placed_at"] = purchases["placed_at"].dt.as_unit("us")
    purchases = purchases.sort_values(["placed_at", "linked_order", "linked_line_no"], kind="stable")
    with_customer = credits[credits["customer_id"].notna()].copy()
    with_customer["at"] = with_customer["at"].dt.as_unit("us")
    matched = pd.merge_asof(
        with_customer.sort_values("at", kind="stable"),
        purchases,
        left_on="at",
        right_on="placed_at",
        by=["customer_id", "sku"],
        allow_exact_matches=False,
        direction="backward",
    ).set_index("position")
    link = ["linked_order", "linked_line_no", "linked_quantity"]
    credits = credits.join(matched[link], on="position")
    credits["linked_line_no"] = credits["linked_line_no"].astype("Int64")
    credits["linked_quantity"] = credits["linked_quantity"].astype("Int64")
    credits = _within_what_was_bought(credits)

    # One return per (credit invoice, linked order or none), numbered by first appearance in the file.
    group = credits["linked_order"].fillna("")
    # a split line's two parts (linked, then receiptless) share its position: the part breaks the tie
    place = credits["position"] * 2 + credits["part"]
    first_place = place.groupby([credits["invoice"], group], sort=False).transform("min")
    number = first_place.groupby(credits["invoice"]).rank(method="dense").astype("int64")
    credits["return_id"] = credits["invoice"] + "-" + number.astype("str")
    credits["return_line_no"] = credits.groupby("return_id", sort=False).cumcount() + 1
    return credits


def _within_what_was_bought(credits: pd.DataFrame) -> pd.DataFrame:
    """A linked credit line takes back at most what is left of its purchase line (the line's quantity
    less what earlier credits linked to it took, in credit-time order); the rest of its units, bought
    before the data window, become a receiptless line of the same credit. `over_returned` marks the
    credit lines that were split or unlinked so."""
    credits = credits.sort_values(["at", "position"], kind="stable")
    linked = credits["linked_order"].notna()
    key = [credits["linked_order"], credits["linked_line_no"]]
    asked_before = (
        credits["quantity"].where(linked, 0).groupby(key, sort=False).cumsum() - credits["quantity"]
    )
    left = (credits["linked_quantity"] - asked_before).clip(lower=0).fillna(0).astype("int64")
    taken = np.minimum(credits["quantity"].to_numpy(), np.where(linked, left.to_numpy(), 0))
    credits["over_returned"] = linked & (taken < credits["quantity"].to_numpy())
    kept = credits[taken > 0].assign(quantity=taken[taken > 0], part=0)
    rest = credits[taken < credits["quantity"].to_numpy()].assign(
        quantity=(credits["quantity"].to_numpy() - taken)[taken < credits["quantity"].to_numpy()], part=1
    )
    rest[["linked_order", "linked_line_no", "linked_quantity"]] = None
    out = pd.concat([kept, rest]).sort_values(["position", "part"], kind="stable")
    out["linked_line_no"] = out["linked_line_no"].astype("Int64")
    out["linked_quantity"] = out["linked_quantity"].astype("Int64")
    out["refund_cents"] = out["quantity"] * out["unit_cents"]
    return out.reset_index(drop=True)


def _mode_per_sku(frame: pd.DataFrame, value: str, priority: Iterable[str] = ()) -> pd.Series:
    """The most frequent `value` per sku (ties: the higher `priority` columns, then the higher value)."""
    keys = ["sku", *priority, value]
    counted = frame.dropna(subset=[value]).groupby(keys, sort=False).size().rename("n").reset_index()
    order = [*priority, "n", value]
    best = counted.sort_values(order, ascending=False, kind="stable").drop_duplicates("sku")
    return best.set_index("sku")[value]


def _customers(kept: pd.DataFrame) -> pd.DataFrame:
    known = kept[kept["customer_id"].notna()]
    first = known.groupby("customer_id", sort=False)["at"].min()
    counted = known.groupby(["customer_id", "Country"], sort=False).size().rename("n").reset_index()
    region = counted.sort_values("n", ascending=False, kind="stable").drop_duplicates("customer_id")
    region = region.set_index("customer_id")["Country"]
    return pd.DataFrame(
        {
            "customer_id": first.index,
            "created_at": _iso(first).to_numpy(),
            "region": region.reindex(first.index).to_numpy(),
        }
    )


def _products(kept: pd.DataFrame) -> pd.DataFrame:
    described = kept.assign(description=_clean_description(kept["Description"]))
    skus = pd.Index(kept["sku"].unique(), name="sku")
    description = _mode_per_sku(described, "description").reindex(skus)
    list_cents = _mode_per_sku(kept, "unit_cents", priority=["is_sale"]).reindex(skus)
    return pd.DataFrame(
        {
            "sku": skus,
            "style_id": skus.str[:5],
            "category": _categories(description).to_numpy(),
            "department": DEPARTMENT,
            "list_price": _money(list_cents.astype("int64")).to_numpy(),
            "return_window_days": RETURN_WINDOW_DAYS,
            "returnable": "true",
            "description": description.to_numpy(),
        }
    )


def _clean_description(values: pd.Series) -> pd.Series:
    text = values.astype("str").str.strip().str.replace(r"\s+", " ", regex=True)
    return text.mask(text.isna() | text.str.lower().isin(["", "nan", "none", "null"]))


def _categories(description: pd.Series) -> pd.Series:
    """A category per description from CATEGORY_KEYWORDS (first match wins; no match: giftware)."""
    category = pd.Series(FALLBACK_CATEGORY, index=description.index, dtype="str")
    decided = pd.Series(False, index=description.index)
    text = description.fillna("").str.upper()
    for name, words in CATEGORY_KEYWORDS:
        pattern = rf"(?<![\w-])(?:{words})(?![\w-])"
        hit = text.str.contains(pattern, regex=True) & ~decided
        category[hit] = name
        decided |= hit
    return category


# --- writing -------------------------------------------------------------------------------------


def _iso(stamps: pd.Series) -> pd.Series:
    return stamps.dt.tz_convert("UTC").dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _money(cents: pd.Series) -> pd.Series:
    """Non-negative integer cents as 2-place decimal text ('12.50')."""
    cents = cents.astype("int64")
    return (cents // 100).astype("str") + "." + (cents % 100).astype("str").str.zfill(2)


def _decimal(cents: int) -> Decimal:
    return Decimal(cents).scaleb(-2)


def _write(out_dir: Path, table: str, frame: pd.DataFrame) -> None:
    """One contract CSV, its columns in contract order (guests and receiptless returns as empty cells)."""
    spec = contract.BY_TABLE[table]
    unknown = set(frame.columns) - set(spec.names)
    if unknown:
        raise AssertionError(f"{table}: {sorted(unknown)} are not contract columns")
    columns = [name for name in spec.names if name in frame.columns]
    frame[columns].to_csv(out_dir / f"{table}.csv", index=False, lineterminator="\n")
