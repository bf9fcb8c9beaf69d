"""The care loop's pure parts: reviewer tokens, sampling, quiet hours, the learning report."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from cbd.learning import ReplyOutcome, build, to_markdown
from cbd.training import mask_pii
from services.audit.care_settings import CareSettings
from services.audit.followup import in_quiet_hours, message_for
from services.audit.outcomes import sampled
from services.audit.reviewers import ReviewerAuth
from shared.passwords import DEV_HASHER

RITA_HASH = DEV_HASHER.hash("correct horse")
"""A cheap argon2id hash (production's profile costs tenths of a second each)."""


def test_reviewer_tokens_are_signed_expire_and_are_not_agent_tokens() -> None:
    auth = ReviewerAuth({"rita": "pw"}, "secret", ttl_s=60)
    assert auth.login("rita", "wrong") is None
    assert auth.login("nobody", "pw") is None
    token = auth.login("rita", "pw")
    assert token is not None
    verified = auth.verify(token)
    assert verified is not None
    assert verified.reviewer_id == "rita"
    assert auth.verify(token, now=verified.expires_at + 1) is None
    assert ReviewerAuth({"rita": "pw"}, "other-secret").verify(token) is None
    assert ReviewerAuth({}, "secret").verify(token) is None  # removed from the list
    body, sig = token.split(".")
    assert auth.verify(body + "." + sig[::-1]) is None
    assert auth.verify("garbage") is None


def test_reviewer_passwords_are_checked_against_argon2_hashes() -> None:
    auth = ReviewerAuth({"rita": RITA_HASH}, "secret")
    assert auth.login("rita", "correct horse") is not None
    assert auth.login("rita", "wrong horse") is None
    assert auth.login("rita", RITA_HASH) is None  # the hash itself is no password
    assert auth.login("nobody", "correct horse") is None
    # What settings hold is never the password: development passwords are hashed too.
    plain = ReviewerAuth({"rita": "pw"}, "secret")
    assert plain.reviewers.hashes["rita"].startswith("$argon2id$")


def test_production_refuses_the_development_reviewers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CBD_ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="CBD_CARE_REVIEWER_TOKEN_SECRET"):
        CareSettings()
    monkeypatch.setenv("CBD_CARE_REVIEWER_TOKEN_SECRET", "s3cret-s3cret")
    with pytest.raises(ValidationError, match="CBD_CARE_REVIEWERS"):
        CareSettings()
    # A password, however long, is refused: production carries argon2 hashes only.
    monkeypatch.setenv("CBD_CARE_REVIEWERS", '{"rita": "a-long-password"}')
    with pytest.raises(ValidationError, match=r"CBD_CARE_REVIEWERS\[rita\] must be an argon2"):
        CareSettings()
    monkeypatch.setenv("CBD_CARE_REVIEWERS", json.dumps({"reviewer": RITA_HASH}))
    with pytest.raises(ValidationError, match="development `reviewer` account"):
        CareSettings()
    monkeypatch.setenv("CBD_CARE_REVIEWERS", json.dumps({"rita": "$argon2id$v=19$broken"}))
    with pytest.raises(ValidationError, match="must be an argon2"):
        CareSettings()
    monkeypatch.setenv("CBD_CARE_REVIEWERS", json.dumps({"rita": RITA_HASH}))
    monkeypatch.setenv("CBD_CARE_IDLE_TIMEOUT_S", '{"web": 600, "sms": 3600}')
    settings = CareSettings()
    assert settings.idle_timeout_for("sms") == 3600
    assert settings.idle_timeout_for("voice") == 600  # unlisted: web's


def test_the_random_sample_is_stable_and_near_its_share() -> None:
    ids = [uuid.UUID(int=i * 7919 + 13) for i in range(4000)]
    picked = [sampled(i, 0.1) for i in ids]
    assert picked == [sampled(i, 0.1) for i in ids]  # a redelivery gets the same answer
    assert 0.08 < sum(picked) / len(ids) < 0.12
    assert not any(sampled(i, 0.0) for i in ids[:100])
    assert all(sampled(i, 1.0) for i in ids[:100])


@pytest.mark.parametrize(
    ("hour", "zone", "quiet"),
    [
        (22, "UTC", True),
        (7, "UTC", True),
        (8, "UTC", False),
        (12, "UTC", False),
        (20, "UTC", False),
        (19, "America/New_York", False),
        (3, "America/New_York", True),
    ],
)
def test_quiet_hours_wrap_past_midnight_in_the_tenant_zone(
    hour: int, zone: str, quiet: bool
) -> None:
    # 19:00 UTC is 14:00 in New York; 03:00 UTC is 22:00 there.
    now = datetime(2026, 11, 30, hour, 0, tzinfo=UTC)
    assert in_quiet_hours(now, 21, 8, zone) is quiet


def test_the_follow_up_names_the_issue_not_the_customer_words() -> None:
    text = message_for("delivery_lost", "Sam")
    assert text.startswith("Hi Sam,")
    assert "missing delivery" in text
    assert "warranty claim" in message_for("warranty_claim", None)


def test_pii_is_masked_before_export() -> None:
    text = (
        "I'm Sam Jones, email sam.jones@example.com, call +44 7700 900123, card "
        "4111 1111 1111 1111, order 48213977, postcode SW1A 1AA"
    )
    masked = mask_pii(text, ["Sam Jones", "Sam", "Jones"])
    for secret in ("sam.jones@", "7700", "4111", "48213977", "SW1A", "Sam", "Jones"):
        assert secret not in masked, secret
    assert "[EMAIL]" in masked
    assert "[CARD]" in masked
    assert "[PHONE]" in masked


def test_the_learning_report_ranks_what_goes_with_low_scores() -> None:
    def outcome(
        playbook: str | None, low: bool, tags: list[str], fix: list[str], knowledge: list[str]
    ) -> ReplyOutcome:
        return ReplyOutcome(
            str(uuid.uuid4()), playbook, knowledge, [2.0 if low else 4.5], low, tags, fix
        )

    outcomes = [
        outcome(
            "billing_dispute",
            True,
            ["wrong_tone"],
            ["I'm sorry about the double charge, I've asked our billing team to refund it today."],
            ["billing/double"],
        ),
        outcome(
            "billing_dispute",
            True,
            ["wrong_tone"],
            ["So sorry about the double charge; our billing team will refund it today."],
            ["billing/double"],
        ),
        outcome("billing_dispute", False, [], [], ["billing/double"]),
        outcome("delivery_delay", False, [], [], ["orders/late"]),
        outcome(None, True, ["missed_need"], ["Completely different words about passwords."], []),
    ]
    report = build(outcomes, datetime(2026, 11, 23, tzinfo=UTC), datetime(2026, 11, 30, tzinfo=UTC))
    names = [p["name"] for p in report.playbooks]
    assert names[0] == "(none)"  # 1 of 1 low
    assert names.index("billing_dispute") < names.index("delivery_delay")
    billing = next(p for p in report.playbooks if p["name"] == "billing_dispute")
    assert billing["low"] == 2
    assert billing["tags"] == {"wrong_tone": 2}
    assert report.knowledge[0]["name"] == "billing/double"
    assert len(report.repeated_corrections) == 1
    assert report.repeated_corrections[0]["count"] == 2
    assert report.repeated_corrections[0]["playbooks"] == {"billing_dispute": 2}
    assert "| billing_dispute | 3 |" in to_markdown(report)
