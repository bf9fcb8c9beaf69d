"""Channel adapters' pure parts: signatures, identities, formatting, voice steps, OpenAPI."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate

from services.ingest.app import create_app
from services.ingest.channels import twiml
from services.ingest.channels.formatting import plain_text, speakable, split_message
from services.ingest.channels.identity import phone_identity
from services.ingest.channels.voice import next_step
from services.ingest.edge import (
    EdgeGuard,
    Refused,
    customer_hash,
    meta_signature,
    twilio_signature,
)
from services.ingest.routers.channels import _meta_messages
from services.ingest.settings import IngestSettings, WidgetKey
from shared.http import undocumented_routes


def test_twilio_signature_matches_twilios_documented_example() -> None:
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+12349013030",
        "Digits": "1234",
        "From": "+12349013030",
        "To": "+18005551212",
    }
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert twilio_signature("12345", url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    assert twilio_signature("12345", url, {**params, "Digits": "9"}) != (
        "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    )


def test_twilio_and_meta_checks_refuse_missing_and_wrong_signatures() -> None:
    guard = EdgeGuard(IngestSettings(twilio_auth_token="tok", whatsapp_app_secret="secret"))
    params = {"From": "+447700900123", "Body": "hi"}
    guard.twilio("https://x/y", params, twilio_signature("tok", "https://x/y", params))
    for signature in (None, "", twilio_signature("other", "https://x/y", params)):
        with pytest.raises(Refused) as err:
            guard.twilio("https://x/y", params, signature)
        assert err.value.status == 403
    body = b'{"object": "whatsapp_business_account"}'
    guard.meta(body, meta_signature("secret", body))
    with pytest.raises(Refused):
        guard.meta(body + b" ", meta_signature("secret", body))
    with pytest.raises(Refused):
        guard.meta(body, None)
    unconfigured = EdgeGuard(IngestSettings())
    with pytest.raises(Refused, match="not configured"):
        unconfigured.twilio("https://x/y", params, "anything")


def test_widget_keys_origins_and_signed_identities() -> None:
    settings = IngestSettings(
        require_keys=True,
        widget_keys={"pk_shop": WidgetKey(tenant="shop", origins=["https://shop.example"])},
        identity_secrets={"shop": "s3cret"},
    )
    guard = EdgeGuard(settings)
    assert guard.widget("pk_shop", "https://shop.example", "web-abc", None).tenant == "shop"
    signed = guard.widget(
        "pk_shop", "https://shop.example", "sam-1", customer_hash("s3cret", "sam-1")
    )
    assert signed.verified_customer
    cases = [
        (None, "https://shop.example", "web-abc", None, 401),
        ("pk_other", "https://shop.example", "web-abc", None, 401),
        ("pk_shop", "https://evil.example", "web-abc", None, 403),
        ("pk_shop", "https://shop.example", "sam-1", None, 403),
        ("pk_shop", "https://shop.example", "sam-1", customer_hash("s3cret", "sam-2"), 403),
    ]
    for key, origin, customer, presented, status in cases:
        with pytest.raises(Refused) as err:
            guard.widget(key, origin, customer, presented)
        assert err.value.status == status, (key, origin, customer)


def test_api_keys_are_required_only_when_configured_and_always_checked() -> None:
    lax = EdgeGuard(IngestSettings(api_keys={"acme": "k1"}))
    assert lax.api_key(None).tenant == "default"
    assert lax.api_key("k1").tenant == "acme"
    with pytest.raises(Refused):
        lax.api_key("wrong")
    strict = EdgeGuard(IngestSettings(require_keys=True, api_keys={"acme": "k1"}))
    with pytest.raises(Refused) as err:
        strict.api_key(None)
    assert err.value.status == 401


def test_production_refuses_development_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CBD_ENVIRONMENT", "production")
    monkeypatch.setenv("CBD_PG_DSN", "postgresql://cbd:pw@db/cbd")
    monkeypatch.setenv("CBD_REDIS_URL", "redis://:pw@redis/0")
    with pytest.raises(ValueError, match="REQUIRE_KEYS"):
        IngestSettings()
    monkeypatch.setenv("CBD_INGEST_REQUIRE_KEYS", "true")
    with pytest.raises(ValueError, match="API_KEYS"):
        IngestSettings()
    monkeypatch.setenv("CBD_INGEST_API_KEYS", '{"acme": "k"}')
    monkeypatch.setenv("CBD_INGEST_WIDGET_KEYS", '{"pk": {"tenant": "acme"}}')
    monkeypatch.setenv("CBD_INGEST_IDENTITY_SECRETS", '{"acme": "s"}')
    assert IngestSettings().require_keys


@pytest.mark.parametrize(
    ("address", "identity"),
    [
        ("+447700900123", "phone:447700900123"),
        ("whatsapp:+447700900123", "phone:447700900123"),
        ("447700900123", "phone:447700900123"),
        ("+1 (415) 555-0100", "phone:14155550100"),
        ("12", None),
        ("anonymous", None),
    ],
)
def test_one_number_is_one_identity_on_every_channel(address: str, identity: str | None) -> None:
    assert phone_identity(address) == identity


def test_plain_text_removes_markdown_and_keeps_links() -> None:
    text = "**Sorry** about that!\n\n# Next steps\n- check [tracking](https://t.example/1)\n"
    assert plain_text(text) == (
        "Sorry about that!\n\nNext steps\n- check tracking (https://t.example/1)"
    )


def test_split_message_respects_the_limit_at_sentence_ends() -> None:
    text = " ".join(f"Sentence number {i} is here." for i in range(200))
    pieces = split_message(text, 1600)
    assert all(len(p) <= 1600 for p in pieces)
    assert len(pieces) > 1
    assert all(p.endswith(".") for p in pieces)
    assert " ".join(pieces) == text


def test_speakable_text_has_no_urls_or_markup_and_stops_at_a_sentence() -> None:
    text = "Track it at https://www.parcels.example/track?id=9. **Then** call us. " + "More. " * 80
    spoken = speakable(text, 120)
    assert "http" not in spoken
    assert "*" not in spoken
    assert spoken.startswith("Track it at the parcels.example website.")
    assert len(spoken) <= 120
    assert spoken.endswith(".")


def test_voice_steps() -> None:
    agent = "+15005550001"
    reply: dict[str, object] = {"text": "Your order ships **today**.", "flags": []}
    step = next_step(reply, turn_id="t", agent_number=agent, max_chars=200, tries=1)
    assert (step.action, step.speak) == ("gather", "Your order ships today.")
    handoff: dict[str, object] = {"text": "A colleague will join.", "flags": ["handoff"]}
    step = next_step(handoff, turn_id="t", agent_number=agent, max_chars=200, tries=1)
    assert (step.action, step.dial) == ("dial", agent)
    assert next_step(None, turn_id="t", agent_number=agent, max_chars=200, tries=1).action == (
        "wait"
    )
    assert next_step(None, turn_id="t", agent_number=agent, max_chars=200, tries=1).tries == 1
    late = next_step(None, turn_id="t", agent_number=agent, max_chars=200, tries=2)
    assert (late.action, late.dial) == ("dial", agent)
    assert next_step(None, turn_id="t", agent_number="", max_chars=200, tries=2).action == (
        "hangup"
    )


def test_twiml_escapes_what_it_says() -> None:
    xml = twiml.response(twiml.gather("/g", "en-GB", twiml.say('a < b & "c"', "en-GB")))
    assert '<Say language="en-GB">a &lt; b &amp; "c"</Say>' in xml
    assert '<Gather input="speech"' in xml


def test_meta_payload_parsing_takes_text_messages_only() -> None:
    payload = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "1",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "messages": [
                                {"from": "447700900123", "id": "wamid.A", "type": "text",
                                 "text": {"body": "hello"}},
                                {"from": "447700900123", "id": "wamid.B", "type": "image",
                                 "image": {"id": "x"}},
                            ],
                            "statuses": [{"id": "wamid.C", "status": "delivered"}],
                        },
                    }
                ],
            }
        ],
    }  # fmt: skip
    assert _meta_messages(payload) == [("447700900123", "wamid.A", "hello")]
    with pytest.raises(Refused):
        _meta_messages({"object": "page"})


def test_the_generated_openapi_is_valid_and_documents_every_route() -> None:
    app = create_app(IngestSettings())
    spec = app.openapi()

    validate(spec)
    assert undocumented_routes(app) == []
    assert {
        "/v1/conversations/{conversation_id}/messages",
        "/v1/conversations/{conversation_id}/feedback",
        "/v1/channels/twilio/messages",
        "/v1/channels/whatsapp",
        "/widget.js",
    } <= set(spec["paths"])
    message = spec["paths"]["/v1/conversations/{conversation_id}/messages"]["post"]
    assert "requestBody" in message
    assert {"404", "422", "429"} <= set(message["responses"])
