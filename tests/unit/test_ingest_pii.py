"""Card, security-code, IBAN and SSN redaction (shared/pii.py): what is caught, what is left.

Known test numbers come from the card networks' and banks' published test data (Visa
4111 1111 1111 1111, Mastercard 5555 5555 5555 4444, Amex 3782 822463 10005; the IBAN
examples of the European Committee for Banking Standards), never real accounts.
"""

from __future__ import annotations

import time

import pytest

from shared.pii import contains_card_number, iban_valid, luhn_valid, redact

SEPARATORS = [" ", "  ", "-", ".", "/", "_", "\u00a0", "\u200b", " - "]


@pytest.mark.parametrize("sep", SEPARATORS, ids=repr)
def test_card_numbers_with_any_separator_become_a_token(sep: str) -> None:
    text = f"my card is {sep.join(['4111', '1111', '1111', '1111'])}, please help"

    result = redact(text)

    assert result.text == "my card is [card ending 1111], please help"
    assert result.found["card"] == 1
    assert not contains_card_number(result.text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5555555555554444", "[card ending 4444]"),
        ("3782 822463 10005", "[card ending 0005]"),
        ("card4111111111111111", "card[card ending 1111]"),
        ("\uff14\uff11\uff11\uff11" + "\uff11" * 12, "[card ending 1111]"),  # full-width digits
        (
            "call 020 7946 0958 about 4111 1111 1111 1111",
            "call 020 7946 0958 about [card ending 1111]",
        ),
    ],
)
def test_card_numbers_in_other_shapes(text: str, expected: str) -> None:
    assert redact(text).text == expected


@pytest.mark.parametrize(
    "text",
    [
        "order 1234567890123456 has not arrived",  # 16 digits, not Luhn-valid
        "on 12/05/2024 call 555-123-4567",
        "tracking 1Z999AA10123456784",
        "ref 1234-5678-9012-3456-7890-1234",
    ],
)
def test_numbers_that_are_not_cards_are_left_alone(text: str) -> None:
    assert redact(text).text == text


@pytest.mark.parametrize(
    "text",
    [
        "the security code is 123",
        "CVV: 123",
        "cvc2 123",
        "security  code:  123",
        "the 3 digits on the back are 123",
        "Card verification value = 123",
    ],
)
def test_security_codes_are_replaced(text: str) -> None:
    result = redact(text)

    assert "123" not in result.text
    assert "[security code]" in result.text


@pytest.mark.parametrize(
    ("text", "ending"),
    [
        ("IBAN GB82 WEST 1234 5698 7654 32 please", "5432"),
        ("DE89 3704 0044 0532 0130 00", "3000"),
        ("pay to de89370400440532013000.", "3000"),
    ],
)
def test_ibans_are_replaced(text: str, ending: str) -> None:
    result = redact(text)

    assert f"[IBAN ending {ending}]" in result.text
    assert "3704" not in result.text
    assert "WEST" not in result.text


def test_ssns_are_replaced_and_impossible_ones_kept() -> None:
    assert redact("SSN 123-45-6789").text == "SSN [SSN]"
    assert redact("my social security number is 123456789").text.endswith("[SSN]")
    assert redact("ticket 000-12-3456").text == "ticket 000-12-3456"


def test_checksums() -> None:
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")
    assert iban_valid("GB82 WEST 1234 5698 7654 32")
    assert not iban_valid("GB82 WEST 1234 5698 7654 33")


@pytest.mark.parametrize(
    "text",
    [
        "1 " * 2000,
        "1-" * 2000,
        "cvv" + " " * 4000 + "x",
        "4" * 4000,
        "4111 " * 800,
        "ab12 " * 800,
        "GB82 " * 800,
        "social security" + " " * 3985,
    ],
    ids=["digit_spaces", "digit_dashes", "cvv_gap", "digits", "groups", "ibanish", "gb", "ssn"],
)
def test_pathological_text_is_redacted_in_linear_time(text: str) -> None:
    # The bound is generous for a shared 2-core runner; quadratic behaviour takes seconds.
    started = time.perf_counter()
    redact(text)
    assert time.perf_counter() - started < 0.5
