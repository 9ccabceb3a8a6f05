"""Money: Stripe's exponents, what donors type, what they read, and never mixing currencies (M3, M4)."""

from __future__ import annotations

import random
import re
from decimal import Decimal

import pytest
from babel.numbers import format_decimal, get_decimal_symbol
from hypothesis import given, settings
from hypothesis import strategies as st

from fundraiser.money import (
    DEFAULT_MAX_MAJOR_UNITS,
    STRIPE_CURRENCIES,
    THREE_DECIMAL,
    WHOLE_UNITS_ONLY,
    ZERO_DECIMAL,
    CurrencyMismatch,
    Money,
    MoneyError,
    exponent,
    format_amount,
    format_plain,
    parse_amount,
    to_decimal,
    to_minor,
)

# The languages the app ships (config.LANGUAGES).
LOCALES = ["en", "ar", "fr", "es", "pt"]
EVERY_CURRENCY = sorted(STRIPE_CURRENCIES)

# Stripe's own lists (docs.stripe.com/currencies): written out here so a wrong edit of the
# module's lists fails a test instead of silently changing what a donor is charged.
STRIPE_ZERO_DECIMAL = {
    "BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA",
    "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF",
}  # fmt: skip
STRIPE_THREE_DECIMAL = {"BHD", "JOD", "KWD", "OMR", "TND"}


def step(currency: str) -> int:
    """The smallest amount Stripe charges in ``currency``, in minor units."""
    if currency in WHOLE_UNITS_ONLY:
        return 100
    if currency in THREE_DECIMAL:
        return 10
    return 1


def max_minor(currency: str) -> int:
    """The largest single gift parse_amount allows, in minor units."""
    return DEFAULT_MAX_MAJOR_UNITS * 10 ** exponent(currency)


def valid_amounts(currency: str, count: int = 100) -> list[int]:
    """Chargeable amounts from the smallest to the largest allowed, spread over every magnitude."""
    unit, top = step(currency), max_minor(currency)
    rng = random.Random(currency)  # the same amounts on every run
    edges = [unit, 2 * unit, 9 * unit, 10 * unit, 99 * unit, 100 * unit, top - unit, top]
    spread = [
        max(unit, rng.randrange(0, 10 ** rng.randint(1, len(str(top)))) // unit * unit)
        for _ in range(count)
    ]
    return sorted({a for a in edges + spread if 0 < a <= top})


# --- Stripe's exponents ------------------------------------------------------------------


def test_currency_lists_match_stripes():
    assert set(ZERO_DECIMAL) == STRIPE_ZERO_DECIMAL
    assert set(THREE_DECIMAL) == STRIPE_THREE_DECIMAL
    assert set(WHOLE_UNITS_ONLY) == {"ISK"}
    assert STRIPE_ZERO_DECIMAL | STRIPE_THREE_DECIMAL | {"ISK"} <= STRIPE_CURRENCIES
    assert len(STRIPE_CURRENCIES) >= 135  # "more than 135 native currencies"
    assert all(re.fullmatch(r"[A-Z]{3}", code) for code in STRIPE_CURRENCIES)


@pytest.mark.parametrize(
    ("currency", "digits"),
    [
        ("USD", 2),
        ("EUR", 2),
        ("ISK", 2),
        ("JPY", 0),
        ("KRW", 0),
        ("UGX", 0),
        ("KWD", 3),
        ("TND", 3),
    ],
)
def test_exponent_is_stripes_and_ignores_case(currency, digits):
    assert exponent(currency) == digits
    assert exponent(f" {currency.lower()} ") == digits


# --- M3: every currency round-trips -------------------------------------------------------


@pytest.mark.parametrize("currency", EVERY_CURRENCY)
def test_every_currency_round_trips_between_typed_amount_and_minor_units(currency):
    mismatches = []
    for minor in valid_amounts(currency):
        major = to_decimal(minor, currency)
        typed = {
            "Decimal": (major, lambda _text, m=major: to_minor(m, currency)),
            "str": (str(major), lambda text: parse_amount(text, currency)),
            "plain": (format_plain(minor, currency), lambda text: parse_amount(text, currency)),
        }
        for locale in LOCALES:
            text = format_decimal(major, locale=locale, decimal_quantization=False)
            typed[locale] = (text, lambda t, loc=locale: parse_amount(t, currency, loc))
        for how, (text, parse) in typed.items():
            try:
                back = parse(text)
            except MoneyError as exc:
                back = f"MoneyError: {exc}"
            if back != minor:
                mismatches.append((minor, how, text, back))
        if major.as_tuple().exponent != -exponent(currency):
            mismatches.append((minor, "to_decimal digits", str(major), None))
    assert mismatches == []


@pytest.mark.parametrize("currency", EVERY_CURRENCY)
def test_the_largest_allowed_gift_is_accepted_and_one_step_more_refused(currency):
    top = max_minor(currency)
    assert parse_amount(format_plain(top, currency), currency) == top
    with pytest.raises(MoneyError, match="The most one gift can be is 1,000,000"):
        parse_amount(format_plain(top + step(currency), currency), currency)


@given(
    minor=st.integers(min_value=-(10**40), max_value=10**40),
    currency=st.sampled_from(EVERY_CURRENCY),
)
@settings(max_examples=500, deadline=None)
def test_minor_units_survive_decimal_and_back_at_any_size(minor, currency):
    # Decimal arithmetic rounds to 28 digits; the conversion must not.
    minor = minor // step(currency) * step(currency)
    assert to_minor(to_decimal(minor, currency), currency) == minor


@pytest.mark.parametrize("currency", sorted(THREE_DECIMAL))
def test_three_decimal_amounts_ending_in_a_non_zero_digit_are_refused(currency):
    refused = []
    for minor in valid_amounts(currency, count=30):
        for last in range(1, 10):
            text = str(to_decimal(minor - 10 + last, currency))  # e.g. 12.341 … 12.349
            try:
                parse_amount(text, currency)
            except MoneyError as exc:
                assert "must end in 0 in the third decimal place" in str(exc)
            else:
                refused.append(text)
    assert refused == []
    assert parse_amount("12.340", currency) == 12340
    assert parse_amount("12.34", currency) == 12340
    assert parse_amount("0.010", currency) == 10


@pytest.mark.parametrize("currency", sorted(ZERO_DECIMAL))
@pytest.mark.parametrize("text", ["10.5", "0.1", "1999.99", "1,000.01", "5.000001"])
def test_zero_decimal_currencies_refuse_any_fraction(currency, text):
    with pytest.raises(MoneyError, match=f"{currency} has no decimal places: enter a whole number"):
        parse_amount(text, currency)


@pytest.mark.parametrize("currency", sorted(ZERO_DECIMAL))
def test_zero_decimal_currencies_take_whole_units_as_minor_units(currency):
    assert parse_amount("500", currency) == 500
    assert parse_amount("1,000", currency) == 1000
    # Decided: zeros after the point change nothing (phones' number inputs may add them),
    # so "500.00" is exactly 500; only a non-zero fraction is refused.
    assert parse_amount("500.00", currency) == 500


@pytest.mark.parametrize("text", ["10.50", "10.01", "0.5", "999.99"])
def test_isk_refuses_fractions_of_a_krona(text):
    with pytest.raises(MoneyError, match="ISK amounts must be whole numbers"):
        parse_amount(text, "ISK")


def test_isk_takes_whole_kronur_in_stripes_two_decimal_minor_units():
    assert parse_amount("10", "ISK") == 1000
    assert parse_amount("10.00", "ISK") == 1000
    assert parse_amount("1.000.000", "ISK", "es") == 100_000_000
    with pytest.raises(MoneyError, match="whole numbers"):
        to_minor(Decimal("0.01"), "ISK")


@pytest.mark.parametrize("text", ["10.001", "0.001", "25.505", "25.5000001"])
def test_two_decimal_currencies_refuse_a_third_decimal(text):
    with pytest.raises(MoneyError, match="USD allows at most 2 decimal places"):
        parse_amount(text, "USD")


def test_many_decimals_are_refused_not_rounded_away():
    # 30 significant digits: more than Decimal's default precision of 28.
    with pytest.raises(MoneyError, match="at most 2 decimal places"):
        parse_amount("25.0000000000000000000000000001", "USD")
    with pytest.raises(MoneyError, match="at most 2 decimal places"):
        to_minor(Decimal("999999.9999999999999999999999999"), "USD")


# --- parse_amount: what is wrong, in words -------------------------------------------------


@pytest.mark.parametrize(
    ("text", "currency", "message"),
    [
        ("0", "USD", "Enter an amount greater than zero."),
        ("0.00", "USD", "Enter an amount greater than zero."),
        ("-0", "USD", "Enter an amount greater than zero."),
        ("-5", "USD", "Enter an amount greater than zero."),
        ("-0.01", "EUR", "Enter an amount greater than zero."),
        ("1000000.01", "USD", "The most one gift can be is 1,000,000 USD."),
        ("2000000", "JPY", "The most one gift can be is 1,000,000 JPY."),
        ("1,000,001", "KWD", "The most one gift can be is 1,000,000 KWD."),
        ("10.005", "USD", "USD allows at most 2 decimal places."),
        ("10.0001", "KWD", "KWD allows at most 3 decimal places."),
        ("10.5", "JPY", "JPY has no decimal places: enter a whole number."),
        ("", "USD", "Enter an amount."),
        ("   ", "USD", "Enter an amount."),
        ("NaN", "USD", "Enter a number, like 25 or 25.50."),
        ("nan", "USD", "Enter a number, like 25 or 25.50."),
        ("sNaN", "USD", "Enter a number, like 25 or 25.50."),
        ("inf", "USD", "Enter a number, like 25 or 25.50."),
        ("-Infinity", "USD", "Enter a number, like 25 or 25.50."),
        ("ten", "USD", "Enter a number, like 25 or 25.50."),
        ("25abc", "USD", "Enter a number, like 25 or 25.50."),
        ("$25", "USD", "Enter a number, like 25 or 25.50."),
        ("12,50", "USD", "Enter a number, like 25 or 25.50."),  # ambiguous in English
        ("1.000,50", "USD", "Enter a number, like 25 or 25.50."),
        ("0x10", "USD", "Enter a number, like 25 or 25.50."),
        ("25", "XYZ", "Unknown currency: 'XYZ'."),
        ("25", "", "Unknown currency: ''."),
        ("25", "US", "Unknown currency: 'US'."),
        ("25", "HRK", "Unknown currency: 'HRK'."),  # replaced by the euro; Stripe refuses it
    ],
)
def test_parse_amount_says_what_is_wrong(text, currency, message):
    with pytest.raises(MoneyError) as raised:
        parse_amount(text, currency)
    assert str(raised.value) == message


@pytest.mark.parametrize("text", ["1e5", "1E5", "1e2", "2.5e1", "1e-2", "1e999999", "1e999999999"])
def test_exponent_notation_is_refused(text):
    # Decided: nobody writes a gift as "1e5"; Decimal would read that slip for 15 as 100,000,
    # and "1e999999" overflows Decimal into an error page instead of a message.
    with pytest.raises(MoneyError, match=re.escape("Enter a number, like 25 or 25.50.")):
        parse_amount(text, "USD")


def test_a_lower_maximum_is_honoured_and_named():
    assert parse_amount("500", "USD", max_major_units=500) == 50_000
    with pytest.raises(MoneyError, match=re.escape("The most one gift can be is 500 USD.")):
        parse_amount("500.01", "USD", max_major_units=500)


def test_surrounding_spaces_and_lower_case_currency_are_fine():
    assert parse_amount("  25.50 ", "usd") == 2550
    assert parse_amount("25", " eur ") == 2500


# --- locales ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "currency", "locale", "minor"),
    [
        ("25,50", "EUR", "fr", 2550),
        ("25,5", "EUR", "fr", 2550),
        ("1\u202f000,50", "EUR", "fr", 100050),  # the separator Babel prints
        ("1 000,50", "EUR", "fr", 100050),  # the space people type
        ("1\u00a0000", "EUR", "fr", 100000),
        ("1,000.50", "USD", "en", 100050),
        ("1,000", "USD", "en", 100000),
        ("25.50", "USD", "en", 2550),
        ("1.000,50", "EUR", "es", 100050),
        ("2.500", "EUR", "pt", 250000),
        ("25,50", "EUR", "pt", 2550),
        ("1,234.500", "KWD", "ar", 1234500),
        ("123,456", "JPY", "ar", 123456),
        ("25.50", "EUR", "fr", 2550),  # a phone's number input sends the plain form
    ],
)
def test_amounts_are_read_the_way_the_donors_locale_writes_them(text, currency, locale, minor):
    assert parse_amount(text, currency, locale) == minor


@pytest.mark.parametrize(("text", "locale"), [("25 50", "fr"), ("1 00", "fr"), ("1,0,0", "en")])
def test_misplaced_group_separators_are_refused_not_guessed(text, locale):
    with pytest.raises(MoneyError, match="Enter a number"):
        parse_amount(text, "EUR", locale)


# Babel is pinned (requirements.txt), so these are the exact strings donors see.
@pytest.mark.parametrize(
    ("locale", "currency", "minor", "shown"),
    [
        ("en", "USD", 123456, "$1,234.56"),
        ("en", "JPY", 123456, "¥123,456"),
        ("en", "BHD", 123450, "BHD123.450"),
        ("fr", "USD", 123456, "1\u202f234,56\u00a0$US"),
        ("fr", "JPY", 123456, "123\u202f456\u00a0JPY"),
        ("fr", "BHD", 123450, "123,450\u00a0BHD"),
        ("ar", "USD", 123456, "\u200f1,234.56\u00a0US$"),
        ("ar", "JPY", 123456, "\u200f123,456\u00a0JP¥"),
        ("ar", "BHD", 123450, "\u200f123.450\u00a0د.ب.\u200f"),
        ("en", "USD", 5, "$0.05"),
        ("en", "USD", -2550, "-$25.50"),
        ("en", "ISK", 150000, "ISK1,500.00"),
    ],
)
def test_format_amount_shows_the_currencys_own_digits_in_the_locales_style(
    locale, currency, minor, shown
):
    assert format_amount(minor, currency, locale) == shown


@pytest.mark.parametrize("locale", LOCALES)
def test_format_amount_always_shows_exactly_stripes_fraction_digits(locale):
    decimal_symbol = get_decimal_symbol(locale)
    wrong = []
    for currency in EVERY_CURRENCY:
        exp = exponent(currency)
        for minor in (step(currency), 1_234_560, max_minor(currency)):
            shown = format_amount(minor, currency, locale)
            number = re.search(r"\d[\d\s.,']*", shown).group().rstrip()
            whole, _, fraction = number.rpartition(decimal_symbol) if exp else (number, "", "")
            digits = re.sub(r"\D", "", whole + fraction).lstrip("0")
            if len(fraction) != exp or digits != str(minor):
                wrong.append((currency, minor, shown))
    assert wrong == []


def test_format_amount_does_not_leak_one_currencys_digits_into_another():
    # Babel caches parsed patterns: changing one in place would change every later amount.
    assert format_amount(100, "JPY", "en") == "¥100"
    assert format_amount(100, "KWD", "en") == "KWD0.100"
    assert format_amount(100, "USD", "en") == "$1.00"


@pytest.mark.parametrize(
    ("minor", "currency", "plain"),
    [(2550, "USD", "25.50"), (5, "USD", "0.05"), (500, "JPY", "500"), (1230, "KWD", "1.230")],
)
def test_format_plain_is_machine_readable(minor, currency, plain):
    assert format_plain(minor, currency) == plain


def test_unknown_currency_cannot_be_formatted():
    with pytest.raises(MoneyError, match="Unknown currency"):
        format_amount(100, "XYZ")


# --- M4 (unit part): never add across currencies -------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"), [("USD", "EUR"), ("USD", "JPY"), ("EUR", "JPY"), ("KWD", "BHD")]
)
def test_adding_or_subtracting_different_currencies_raises(a, b):
    with pytest.raises(CurrencyMismatch, match=f"Cannot add {a} and {b}"):
        Money(100, a) + Money(100, b)
    with pytest.raises(CurrencyMismatch):
        Money(100, b) - Money(100, a)


def test_money_in_one_currency_adds_exactly():
    total = Money(2550, "usd") + Money(50, "USD") - Money(100, "USD")
    assert total == Money(2500, "USD")
    assert total.decimal == Decimal("25.00")
    assert Money(1230, "KWD").decimal == Decimal("1.230")


def test_money_refuses_what_is_not_an_integer_amount_or_a_stripe_currency():
    with pytest.raises(TypeError):
        Money(25.5, "USD")
    with pytest.raises(TypeError):
        Money(True, "USD")
    with pytest.raises(MoneyError, match="Unknown currency"):
        Money(100, "XYZ")
    with pytest.raises(TypeError):
        Money(100, "USD") + 100
