"""Money: Stripe's currency exponents, parsing what people type, formatting, and exact splits.

Every amount in the app is an ``int`` in the currency's minor unit plus a three-letter code.
This module is the only place that converts between that and what people read or type.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from babel import Locale
from babel.numbers import (
    NumberFormatError,
    NumberPattern,
    format_decimal,
    get_group_symbol,
    parse_decimal,
    parse_pattern,
)
from flask_babel import lazy_gettext as _l

# Stripe's presentment currencies (docs.stripe.com/currencies). Two-decimal unless listed below.
STRIPE_CURRENCIES: frozenset[str] = frozenset(
    [
        "USD",
        "AED",
        "AFN",
        "ALL",
        "AMD",
        "ANG",
        "AOA",
        "ARS",
        "AUD",
        "AWG",
        "AZN",
        "BAM",
        "BBD",
        "BDT",
        "BGN",
        "BHD",
        "BIF",
        "BMD",
        "BND",
        "BOB",
        "BRL",
        "BSD",
        "BWP",
        "BYN",
        "BZD",
        "CAD",
        "CDF",
        "CHF",
        "CLP",
        "CNY",
        "COP",
        "CRC",
        "CVE",
        "CZK",
        "DJF",
        "DKK",
        "DOP",
        "DZD",
        "EGP",
        "ETB",
        "EUR",
        "FJD",
        "FKP",
        "GBP",
        "GEL",
        "GIP",
        "GMD",
        "GNF",
        "GTQ",
        "GYD",
        "HKD",
        "HNL",
        "HTG",
        "HUF",
        "IDR",
        "ILS",
        "INR",
        "ISK",
        "JMD",
        "JOD",
        "JPY",
        "KES",
        "KGS",
        "KHR",
        "KMF",
        "KRW",
        "KWD",
        "KYD",
        "KZT",
        "LAK",
        "LBP",
        "LKR",
        "LRD",
        "LSL",
        "MAD",
        "MDL",
        "MGA",
        "MKD",
        "MMK",
        "MNT",
        "MOP",
        "MUR",
        "MVR",
        "MWK",
        "MXN",
        "MYR",
        "MZN",
        "NAD",
        "NGN",
        "NIO",
        "NOK",
        "NPR",
        "NZD",
        "OMR",
        "PAB",
        "PEN",
        "PGK",
        "PHP",
        "PKR",
        "PLN",
        "PYG",
        "QAR",
        "RON",
        "RSD",
        "RUB",
        "RWF",
        "SAR",
        "SBD",
        "SCR",
        "SEK",
        "SGD",
        "SHP",
        "SLE",
        "SOS",
        "SRD",
        "STD",
        "SZL",
        "THB",
        "TJS",
        "TND",
        "TOP",
        "TRY",
        "TTD",
        "TWD",
        "TZS",
        "UAH",
        "UGX",
        "UYU",
        "UZS",
        "VND",
        "VUV",
        "WST",
        "XAF",
        "XCD",
        "XOF",
        "XPF",
        "YER",
        "ZAR",
        "ZMW",
    ]
)

# Stripe's zero-decimal currencies: the API amount is the whole unit (1000 JPY is 1000).
ZERO_DECIMAL: frozenset[str] = frozenset(
    [
        "BIF",
        "CLP",
        "DJF",
        "GNF",
        "JPY",
        "KMF",
        "KRW",
        "MGA",
        "PYG",
        "RWF",
        "UGX",
        "VND",
        "VUV",
        "XAF",
        "XOF",
        "XPF",
    ]
)

# Stripe's three-decimal currencies: the last digit must be 0 (Stripe rounds to 10 fils).
THREE_DECIMAL: frozenset[str] = frozenset(["BHD", "JOD", "KWD", "OMR", "TND"])

# ISK is two-decimal in Stripe's API for backwards compatibility, but only whole krónur
# can be charged, so its minor amount must be a multiple of 100.
WHOLE_UNITS_ONLY: frozenset[str] = frozenset({"ISK"})

# A single gift above this many major units is refused as a likely typo (per currency it is
# the same number of major units; organizers can raise it in config later).
DEFAULT_MAX_MAJOR_UNITS = 1_000_000


class MoneyError(ValueError):
    """An amount that cannot be used, with a message a donor can read."""


def exponent(currency: str) -> int:
    """Return how many minor-unit digits Stripe uses for ``currency``."""
    code = normalize_currency(currency)
    if code in ZERO_DECIMAL:
        return 0
    if code in THREE_DECIMAL:
        return 3
    return 2


def normalize_currency(currency: str) -> str:
    """Return the upper-case ISO code, or raise MoneyError for a currency Stripe does not take."""
    code = (currency or "").strip().upper()
    if code not in STRIPE_CURRENCIES:
        raise MoneyError(_l("Unknown currency: %(code)s.", code=repr(currency)))
    return code


@dataclass(frozen=True, slots=True)
class Money:
    """An amount in minor units with its currency; adding two currencies raises."""

    amount_minor: int
    currency: str

    def __post_init__(self) -> None:
        if not isinstance(self.amount_minor, int) or isinstance(self.amount_minor, bool):
            raise TypeError("amount_minor must be an int")
        object.__setattr__(self, "currency", normalize_currency(self.currency))

    def __add__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        if other.currency != self.currency:
            raise CurrencyMismatch(f"Cannot add {self.currency} and {other.currency}.")
        return Money(self.amount_minor + other.amount_minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        return self + Money(-other.amount_minor, other.currency)

    @property
    def decimal(self) -> Decimal:
        """The amount in major units, exact."""
        return to_decimal(self.amount_minor, self.currency)


class CurrencyMismatch(TypeError):
    """Raised when code tries to combine amounts in different currencies."""


def to_decimal(amount_minor: int, currency: str) -> Decimal:
    """Convert minor units to an exact Decimal in major units."""
    exp = exponent(currency)
    # Built from text, not with scaleb(): Decimal arithmetic rounds to the context's 28 digits.
    return Decimal(f"{amount_minor}E-{exp}")


def to_minor(amount: Decimal, currency: str) -> int:
    """Convert an exact major-unit Decimal to minor units, refusing anything Stripe would refuse."""
    code = normalize_currency(currency)
    exp = exponent(code)
    if not amount.is_finite():
        raise MoneyError(_l("Enter a number."))
    # Exact integer arithmetic: Decimal's scaleb() rounds to the context's 28 digits, which
    # turned "25.0000000000000000000000000001" into 2500 instead of refusing it.
    numerator, denominator = amount.as_integer_ratio()
    minor, rest = divmod(numerator * 10**exp, denominator)
    if rest:
        if exp == 0:
            raise MoneyError(_l("%(code)s has no decimal places: enter a whole number.", code=code))
        raise MoneyError(
            _l("%(code)s allows at most %(digits)s decimal places.", code=code, digits=exp)
        )
    if code in THREE_DECIMAL and minor % 10:
        raise MoneyError(
            _l("%(code)s amounts must end in 0 in the third decimal place.", code=code)
        )
    if code in WHOLE_UNITS_ONLY and minor % 100:
        raise MoneyError(_l("%(code)s amounts must be whole numbers.", code=code))
    return minor


def parse_amount(
    text: str,
    currency: str,
    locale: str | Locale = "en",
    *,
    max_major_units: int = DEFAULT_MAX_MAJOR_UNITS,
) -> int:
    """Parse what a donor typed into positive minor units, or raise MoneyError saying why."""
    code = normalize_currency(currency)
    raw = (text or "").strip()
    if not raw:
        raise MoneyError(_l("Enter an amount."))
    # No letters: Decimal reads "1e5" (a slip for 15) as 100000, and "1e999999" overflows.
    if any(char.isalpha() for char in raw):
        raise MoneyError(_l("Enter a number, like 25 or 25.50."))
    # Strict parsing only takes the locale's own group separator, and French groups with a
    # narrow no-break space that nobody types: read a typed space as that separator.
    group_symbol = get_group_symbol(locale)
    if group_symbol.isspace():
        raw = re.sub(r"\s", group_symbol, raw)
    try:
        value = parse_decimal(raw, locale=locale, strict=True)
    except NumberFormatError:
        # strict parsing refuses "1000.5" in locales that group with "." — accept the
        # plain machine form as well, since number inputs on phones send it.
        try:
            value = Decimal(raw)
        except InvalidOperation:
            raise MoneyError(_l("Enter a number, like 25 or 25.50.")) from None
    if not value.is_finite():
        raise MoneyError(_l("Enter a number, like 25 or 25.50."))
    if value <= 0:
        raise MoneyError(_l("Enter an amount greater than zero."))
    # Checked before converting, so an absurdly long number is refused without big arithmetic.
    if value > max_major_units:
        raise MoneyError(
            _l(
                "The most one gift can be is %(number)s %(code)s.",
                number=format_decimal(max_major_units, locale=locale),
                code=code,
            )
        )
    return to_minor(value, code)


def format_amount(amount_minor: int, currency: str, locale: str | Locale = "en") -> str:
    """Format minor units for people, in the locale's style, with the currency's own digits."""
    loc = Locale.parse(locale) if isinstance(locale, str) else locale
    return _format_amount(amount_minor, normalize_currency(currency), loc)


# Receipts and pages show the same few amounts (a gift's shares) in a handful of locales,
# and Babel takes a tenth of a millisecond for each.
@lru_cache(maxsize=4096)
def _format_amount(amount_minor: int, code: str, loc: Locale) -> str:
    """:func:`format_amount` of a currency code and a parsed locale."""
    return _currency_pattern(loc, code).apply(
        to_decimal(amount_minor, code), loc, currency=code, currency_digits=False
    )


@lru_cache(maxsize=1024)
def _currency_pattern(loc: Locale, code: str) -> NumberPattern:
    """The locale's currency pattern with the currency's own digits (made once per pair).

    Babel's CLDR digits differ from Stripe's for a few currencies (ISK), so show exactly
    the digits Stripe charges in, copying the pattern because Babel caches it.
    """
    exp = exponent(code)
    pattern = copy.copy(parse_pattern(loc.currency_formats["standard"].pattern))
    pattern.frac_prec = (exp, exp)
    return pattern


def format_plain(amount_minor: int, currency: str) -> str:
    """Format minor units as a plain machine-readable number ("25.00"), for inputs and CSV."""
    exp = exponent(currency)
    return f"{to_decimal(amount_minor, currency):.{exp}f}"


def split_largest_remainder(total: int, weights: Sequence[int]) -> list[int]:
    """Split ``total`` minor units by integer ``weights`` so the shares sum exactly.

    Each share is the floor of its exact share, and the units left over go one each to the
    largest fractional remainders; ties go to the earlier position, so the result is
    deterministic and depends only on (total, weights). A negative total (more refunded
    than given) is split the same way and negated.
    """
    if not weights:
        if total:
            raise ValueError("cannot split a non-zero total among no groups")
        return []
    if any(w < 0 for w in weights):
        raise ValueError("weights must not be negative")
    weight_sum = sum(weights)
    if weight_sum == 0:
        raise ValueError("at least one weight must be positive")
    if total < 0:
        return [-share for share in split_largest_remainder(-total, weights)]
    shares = [total * w // weight_sum for w in weights]
    remainders = [total * w % weight_sum for w in weights]
    left = total - sum(shares)
    order = sorted(range(len(weights)), key=lambda i: (-remainders[i], i))
    for i in order[:left]:
        shares[i] += 1
    return shares
